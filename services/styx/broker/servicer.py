"""gRPC servicer of styx.v1.ResourceBroker: translate, call the core, translate back."""

from __future__ import annotations

from typing import Any

import grpc

from styx.broker import convert
from styx.broker.core import Broker
from styx.common.auth import mint_node_token
from styx.common.errors import InvalidArgument
from styx.common.pagination import page
from styx.v1 import broker_pb2, broker_pb2_grpc, common_pb2


class BrokerServicer(broker_pb2_grpc.ResourceBrokerServicer):
    """Thin adapter over ``Broker``."""

    def __init__(self, broker: Broker, token: str = "") -> None:
        self.broker = broker
        # The shared token: node tokens handed out by JoinNode are signed with it.
        self.token = token

    def JoinNode(
        self, request: broker_pb2.JoinNodeRequest, context: grpc.ServicerContext
    ) -> broker_pb2.JoinNodeResponse:
        self.broker.join_node(request.node_id, request.request_id)
        return broker_pb2.JoinNodeResponse(node_token=mint_node_token(self.token, request.node_id))

    def RegisterNode(self, request: broker_pb2.RegisterNodeRequest, context: grpc.ServicerContext) -> common_pb2.Node:
        node = self.broker.register_node(
            request.node_id,
            request.provider,
            request.instance_id,
            convert.capacity_from_pb(request.capacity),
            request.region,
            request.zone,
            request.instance_type,
            dict(request.labels),
            request.address,
        )
        return convert.node_to_pb(node)

    def Heartbeat(
        self, request: broker_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> broker_pb2.HeartbeatResponse:
        known = self.broker.heartbeat(request.node_id)
        return broker_pb2.HeartbeatResponse(known=known, lease_seconds=self.broker.lease_seconds)

    def DeregisterNode(
        self, request: broker_pb2.DeregisterNodeRequest, context: grpc.ServicerContext
    ) -> common_pb2.Node:
        if not request.node_id:
            raise InvalidArgument("node_id: required")
        return convert.node_to_pb(self.broker.deregister_node(request.node_id, request.reason, request.instance_lost))

    def Allocate(
        self, request: broker_pb2.AllocateRequest, context: grpc.ServicerContext
    ) -> broker_pb2.AllocateResponse:
        for i, r in enumerate(request.requests):
            if not r.allocation_id:
                raise InvalidArgument(f"requests[{i}].allocation_id: required")
            if r.num_nodes > 64:
                raise InvalidArgument(f"requests[{i}].num_nodes: at most 64, got {r.num_nodes}")
        return convert.placements_to_pb(self.broker.allocate(convert.asks_from_pb(request)))

    def Release(self, request: broker_pb2.ReleaseRequest, context: grpc.ServicerContext) -> broker_pb2.ReleaseResponse:
        ids = [i for i in (request.allocation_id, *request.allocation_ids) if i]
        if not ids:
            raise InvalidArgument("allocation_id: required (or allocation_ids)")
        released = self.broker.release(request.allocation_id) if request.allocation_id else False
        count = int(released) + (
            self.broker.release_many(list(request.allocation_ids)) if request.allocation_ids else 0
        )
        return broker_pb2.ReleaseResponse(released=released, released_count=count)

    def GetNode(self, request: broker_pb2.GetNodeRequest, context: grpc.ServicerContext) -> common_pb2.Node:
        return convert.node_to_pb(self.broker.get_node(request.node_id))

    def ListNodes(
        self, request: broker_pb2.ListNodesRequest, context: grpc.ServicerContext
    ) -> broker_pb2.ListNodesResponse:
        nodes, token = page(self.broker.list_nodes(include_lost=request.include_lost), request, _node_key)
        return broker_pb2.ListNodesResponse(nodes=[convert.node_to_pb(n) for n in nodes], next_page_token=token)

    def Optimize(
        self, request: broker_pb2.OptimizeRequest, context: grpc.ServicerContext
    ) -> broker_pb2.OptimizeResponse:
        if not request.HasField("resources"):
            raise InvalidArgument("resources: required")
        res = convert.resources_from_pb(request.resources)
        ranking = self.broker.optimize(res, request.num_nodes, request.limit, request.include_disabled)
        return convert.ranking_to_pb(ranking, res)

    def ImportCatalog(
        self, request: broker_pb2.ImportCatalogRequest, context: grpc.ServicerContext
    ) -> broker_pb2.ImportCatalogResponse:
        count, providers = self.broker.import_catalog(convert.offers_from_pb(request.offers), request.request_id)
        return broker_pb2.ImportCatalogResponse(count=count, providers=providers)

    def ListCatalogs(
        self, request: broker_pb2.ListCatalogsRequest, context: grpc.ServicerContext
    ) -> broker_pb2.ListCatalogsResponse:
        catalogs, token = page(self.broker.list_catalogs(), request, _provider_key)
        reply = convert.catalogs_to_pb(catalogs)
        reply.next_page_token = token
        return reply

    def ListAccelerators(
        self, request: broker_pb2.ListAcceleratorsRequest, context: grpc.ServicerContext
    ) -> broker_pb2.ListAcceleratorsResponse:
        accels, token = page(self.broker.list_accelerators(request.name, request.include_disabled), request, _name_key)
        reply = convert.accelerators_to_pb(accels)
        reply.next_page_token = token
        return reply

    def ListProvisioningAttempts(
        self, request: broker_pb2.ListProvisioningAttemptsRequest, context: grpc.ServicerContext
    ) -> broker_pb2.ListProvisioningAttemptsResponse:
        attempts = self.broker.list_attempts(request.task_id, request.allocation_id, request.node_id, request.limit)
        shown, token = page(attempts, request, _newest_first)
        reply = convert.attempts_to_pb(shown)
        reply.next_page_token = token
        return reply

    def CreateCluster(
        self, request: broker_pb2.CreateClusterRequest, context: grpc.ServicerContext
    ) -> broker_pb2.Cluster:
        res = convert.resources_from_pb(request.resources)
        view = self.broker.create_cluster(
            request.name, res, request.num_nodes or 1, request.idle_minutes, request.autostop_down
        )
        return convert.cluster_to_pb(view)

    def GetCluster(self, request: broker_pb2.GetClusterRequest, context: grpc.ServicerContext) -> broker_pb2.Cluster:
        return convert.cluster_to_pb(self.broker.get_cluster(request.name))

    def ListClusters(
        self, request: broker_pb2.ListClustersRequest, context: grpc.ServicerContext
    ) -> broker_pb2.ListClustersResponse:
        views, token = page(self.broker.list_clusters(request.include_down), request, _name_key)
        return broker_pb2.ListClustersResponse(
            clusters=[convert.cluster_to_pb(v) for v in views], next_page_token=token
        )

    def DownCluster(self, request: broker_pb2.DownClusterRequest, context: grpc.ServicerContext) -> broker_pb2.Cluster:
        return convert.cluster_to_pb(self.broker.down_cluster(request.name))

    def SetAutostop(self, request: broker_pb2.SetAutostopRequest, context: grpc.ServicerContext) -> broker_pb2.Cluster:
        view = self.broker.set_autostop(request.name, request.idle_minutes, request.down)
        return convert.cluster_to_pb(view)

    def StopCluster(self, request: broker_pb2.StopClusterRequest, context: grpc.ServicerContext) -> broker_pb2.Cluster:
        return convert.cluster_to_pb(self.broker.stop_cluster(request.name))

    def StartCluster(
        self, request: broker_pb2.StartClusterRequest, context: grpc.ServicerContext
    ) -> broker_pb2.Cluster:
        return convert.cluster_to_pb(self.broker.start_cluster(request.name))


# Sort keys of the List RPCs' pages (unique per item; see styx.common.pagination).
def _node_key(node: Any) -> str:
    return str(node.node_id)


def _provider_key(info: Any) -> str:
    return str(info.provider)


def _name_key(item: Any) -> str:
    return str(item.name)


def _newest_first(attempt: Any) -> str:
    # Newest first, as list_attempts orders them: the inverted start time sorts ascending.
    return f"{1e12 - attempt.started_at:020.6f}/{attempt.node_id}"
