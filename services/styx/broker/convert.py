"""Protobuf <-> domain conversion for the broker (and the resource messages it shares)."""

from __future__ import annotations

from collections.abc import Iterable

from styx.broker.clusters import ClusterView
from styx.broker.model import AcceleratorInfo, Attempt, CatalogInfo, NodeView
from styx.broker.optimizer import Ranking, describe_request
from styx.common.offers import Offer, offer_from_pb, offer_to_pb
from styx.common.placement import INFEASIBLE, PLACED, WAITING, Ask, Placement
from styx.common.resources import Capacity, GpuDevice, Resources, resources_from_pb, resources_to_pb
from styx.common.timeutil import to_timestamp
from styx.v1 import broker_pb2, common_pb2, provisioner_pb2

_OUTCOMES = {
    PLACED: broker_pb2.ALLOCATION_OUTCOME_PLACED,
    WAITING: broker_pb2.ALLOCATION_OUTCOME_WAITING,
    INFEASIBLE: broker_pb2.ALLOCATION_OUTCOME_INFEASIBLE,
}
# GONE: deregistered by its agent (which stopped its tasks) or its provider (instance gone),
# so the scheduler re-queues its work at once; LOST only after its fence interval.
_NODE_STATES = {
    "READY": common_pb2.NODE_STATE_READY,
    "LOST": common_pb2.NODE_STATE_LOST,
    "GONE": common_pb2.NODE_STATE_GONE,
}


def capacity_from_pb(msg: common_pb2.Capacity) -> Capacity:
    """Capacity message -> Capacity."""
    return Capacity(msg.cpus, msg.memory_gib, [GpuDevice(g.index, g.name, g.memory_gib) for g in msg.gpus])


def capacity_to_pb(cap: Capacity) -> common_pb2.Capacity:
    """Capacity -> Capacity message."""
    return common_pb2.Capacity(
        cpus=cap.cpus,
        memory_gib=cap.memory_gib,
        gpus=[common_pb2.Gpu(index=g.index, name=g.name, memory_gib=g.memory_gib) for g in cap.gpus],
    )


def node_to_pb(node: NodeView) -> common_pb2.Node:
    """NodeView -> Node message."""
    used = [g for g in node.total.gpus if g.index in node.used_gpus]
    return common_pb2.Node(
        node_id=node.node_id,
        provider=node.provider,
        instance_id=node.instance_id,
        region=node.region,
        zone=node.zone,
        instance_type=node.instance_type,
        total=capacity_to_pb(node.total),
        allocated=capacity_to_pb(Capacity(node.used_cpus, node.used_memory_gib, used)),
        state=_NODE_STATES.get(node.state, common_pb2.NODE_STATE_UNSPECIFIED),
        labels=node.labels,
        last_heartbeat=to_timestamp(node.last_heartbeat),
        registered_at=to_timestamp(node.registered_at),
        address=node.address,
    )


def asks_from_pb(msg: broker_pb2.AllocateRequest) -> list[Ask]:
    """AllocateRequest -> asks."""
    return [Ask(r.allocation_id, r.task_id, resources_from_pb(r.resources), r.num_nodes or 1) for r in msg.requests]


def placements_to_pb(placements: list[Placement]) -> broker_pb2.AllocateResponse:
    """Placements -> AllocateResponse."""
    return broker_pb2.AllocateResponse(
        results=[
            broker_pb2.AllocationResult(
                allocation_id=p.allocation_id,
                outcome=_OUTCOMES[p.outcome],
                node_id=p.node_id,
                gpu_indices=list(p.gpu_indices),
                reason=p.reason,
                nodes=[
                    broker_pb2.NodePlacement(node_id=n.node_id, gpu_indices=list(n.gpu_indices), address=n.address)
                    for n in p.nodes
                ],
            )
            for p in placements
        ]
    )


def ranking_to_pb(ranking: Ranking, res: Resources) -> broker_pb2.OptimizeResponse:
    """Ranking -> OptimizeResponse."""
    return broker_pb2.OptimizeResponse(
        offers=[
            broker_pb2.RankedOffer(
                offer=offer_to_pb(r.offer),
                hourly_price=r.hourly_price,
                total_hourly_price=r.total_hourly_price,
                spot=r.spot,
                provider_enabled=r.enabled,
                alternative=r.alternative,
            )
            for r in ranking.offers
        ],
        rejections=[broker_pb2.Rejection(family=r.family, reason=r.reason) for r in ranking.rejections],
        request_summary=describe_request(res),
    )


def offers_from_pb(msgs: Iterable[common_pb2.Offer]) -> list[Offer]:
    """Offer messages -> offers."""
    return [offer_from_pb(o) for o in msgs]


def catalogs_to_pb(infos: list[CatalogInfo]) -> broker_pb2.ListCatalogsResponse:
    """CatalogInfo list -> ListCatalogsResponse."""
    return broker_pb2.ListCatalogsResponse(
        catalogs=[
            broker_pb2.CatalogInfo(
                provider=c.provider,
                offers=c.offers,
                imported=c.imported,
                imported_at=to_timestamp(c.imported_at) if c.imported else None,
                regions=c.regions,
            )
            for c in infos
        ]
    )


def accelerators_to_pb(infos: list[AcceleratorInfo]) -> broker_pb2.ListAcceleratorsResponse:
    """AcceleratorInfo list -> ListAcceleratorsResponse."""
    return broker_pb2.ListAcceleratorsResponse(
        accelerators=[
            broker_pb2.AcceleratorInfo(
                name=a.name,
                counts=list(a.counts),
                providers=list(a.providers),
                offers=[
                    broker_pb2.AcceleratorOffer(
                        count=o.count, cheapest=offer_to_pb(o.cheapest), cheapest_spot_price_per_hour=o.cheapest_spot
                    )
                    for o in a.offers
                ],
                memory_gib=a.memory_gib,
            )
            for a in infos
        ]
    )


_ATTEMPT_STATES = {
    "pending": broker_pb2.PROVISIONING_ATTEMPT_STATE_PENDING,
    "registered": broker_pb2.PROVISIONING_ATTEMPT_STATE_REGISTERED,
    "failed": broker_pb2.PROVISIONING_ATTEMPT_STATE_FAILED,
    "lost": broker_pb2.PROVISIONING_ATTEMPT_STATE_LOST,
}
_ERROR_KINDS = {
    "capacity": provisioner_pb2.PROVIDER_ERROR_KIND_CAPACITY,
    "quota": provisioner_pb2.PROVIDER_ERROR_KIND_QUOTA,
    "auth": provisioner_pb2.PROVIDER_ERROR_KIND_AUTH,
    "invalid": provisioner_pb2.PROVIDER_ERROR_KIND_INVALID,
    "internal": provisioner_pb2.PROVIDER_ERROR_KIND_INTERNAL,
}


def attempts_to_pb(attempts: list[Attempt]) -> broker_pb2.ListProvisioningAttemptsResponse:
    """Attempt list -> ListProvisioningAttemptsResponse."""
    return broker_pb2.ListProvisioningAttemptsResponse(
        attempts=[
            broker_pb2.ProvisioningAttempt(
                node_id=a.node_id,
                allocation_id=a.allocation_id,
                task_id=a.task_id,
                offer=offer_to_pb(a.offer),
                spot=a.spot,
                hourly_price=a.hourly_price,
                state=_ATTEMPT_STATES.get(a.state, broker_pb2.PROVISIONING_ATTEMPT_STATE_UNSPECIFIED),
                error=a.error,
                error_kind=_ERROR_KINDS.get(a.error_kind, provisioner_pb2.PROVIDER_ERROR_KIND_UNSPECIFIED),
                operation_id=a.operation_id,
                started_at=to_timestamp(a.started_at),
                updated_at=to_timestamp(a.updated_at),
            )
            for a in attempts
        ]
    )


_CLUSTER_STATES = {
    "INIT": broker_pb2.CLUSTER_STATE_INIT,
    "UP": broker_pb2.CLUSTER_STATE_UP,
    "DOWN": broker_pb2.CLUSTER_STATE_DOWN,
    "FAILED": broker_pb2.CLUSTER_STATE_FAILED,
    "STOPPED": broker_pb2.CLUSTER_STATE_STOPPED,
    "STARTING": broker_pb2.CLUSTER_STATE_STARTING,
}


def cluster_to_pb(view: ClusterView) -> broker_pb2.Cluster:
    """ClusterView -> Cluster message."""
    return broker_pb2.Cluster(
        name=view.name,
        state=_CLUSTER_STATES[view.state],
        resources=resources_to_pb(view.resources),
        num_nodes=view.num_nodes,
        node_ids=view.node_ids,
        idle_minutes=view.idle_minutes,
        autostop_down=view.autostop_down,
        reason=view.reason,
        hourly_price=view.hourly_price,
        where=view.where,
    )
