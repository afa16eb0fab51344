"""gRPC servicer of styx.v1.Provisioner: convert, call the core, convert back.

Errors raised by the core (``styx.common.errors``) become status codes in the server's
interceptor (``styx.common.server``), so no method here handles them.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from styx.common.pagination import page
from styx.provisioner import convert
from styx.provisioner.core import Provisioner
from styx.v1 import provisioner_pb2, provisioner_pb2_grpc


class ProvisionerServicer(provisioner_pb2_grpc.ProvisionerServicer):
    """Serves styx.v1.Provisioner over a ``Provisioner`` core."""

    def __init__(self, core: Provisioner) -> None:
        self._core = core

    def ListProviders(
        self, request: provisioner_pb2.ListProvidersRequest, context: grpc.ServicerContext
    ) -> provisioner_pb2.ListProvidersResponse:
        """Every loaded provider with its status."""
        infos, token = page(self._core.list_providers(), request, lambda i: str(i.name))
        return provisioner_pb2.ListProvidersResponse(
            providers=[convert.provider_info_to_proto(i) for i in infos], next_page_token=token
        )

    def ListOffers(
        self, request: provisioner_pb2.ListOffersRequest, context: grpc.ServicerContext
    ) -> provisioner_pb2.ListOffersResponse:
        """Offers of enabled providers."""
        offers, token = page(self._core.list_offers(request.provider), request, lambda o: "/".join(o.key))
        return provisioner_pb2.ListOffersResponse(
            offers=[convert.offer_to_proto(o) for o in offers], next_page_token=token
        )

    def Provision(
        self, request: provisioner_pb2.ProvisionRequest, context: grpc.ServicerContext
    ) -> provisioner_pb2.Operation:
        """Start creating an instance."""
        op = self._core.provision(
            request_id=request.request_id,
            offer=convert.offer_from_proto(request.offer),
            node_id=request.node_id,
            use_spot=request.use_spot,
            labels=dict(request.labels),
        )
        return convert.operation_to_proto(op)

    def Terminate(
        self, request: provisioner_pb2.TerminateRequest, context: grpc.ServicerContext
    ) -> provisioner_pb2.Operation:
        """Start terminating a node's instance."""
        return convert.operation_to_proto(self._core.terminate(request.request_id, request.node_id))

    def Stop(self, request: provisioner_pb2.StopRequest, context: grpc.ServicerContext) -> provisioner_pb2.Operation:
        """Start stopping a node's instance."""
        return convert.operation_to_proto(self._core.stop_instance(request.request_id, request.node_id))

    def Start(self, request: provisioner_pb2.StartRequest, context: grpc.ServicerContext) -> provisioner_pb2.Operation:
        """Start a node's stopped instance."""
        return convert.operation_to_proto(self._core.start_instance(request.request_id, request.node_id))

    def GetProviderCatalog(
        self, request: provisioner_pb2.GetProviderCatalogRequest, context: grpc.ServicerContext
    ) -> provisioner_pb2.GetProviderCatalogResponse:
        """A provider's catalog from its cloud's APIs."""
        offers = self._core.provider_catalog(request.provider, list(request.regions))
        return provisioner_pb2.GetProviderCatalogResponse(offers=[convert.offer_to_proto(o) for o in offers])

    def GetOperation(
        self, request: provisioner_pb2.GetOperationRequest, context: grpc.ServicerContext
    ) -> provisioner_pb2.Operation:
        """One operation's state."""
        return convert.operation_to_proto(self._core.get_operation(request.operation_id))

    def WatchOperation(
        self, request: provisioner_pb2.WatchOperationRequest, context: grpc.ServicerContext
    ) -> Iterator[provisioner_pb2.Operation]:
        """Each state of an operation until it is done or failed."""
        for op in self._core.watch_operation(request.operation_id, is_active=context.is_active):
            yield convert.operation_to_proto(op)

    def ListInstances(
        self, request: provisioner_pb2.ListInstancesRequest, context: grpc.ServicerContext
    ) -> provisioner_pb2.ListInstancesResponse:
        """Instances the provisioner owns."""
        found, token = page(
            self._core.list_instances(request.provider, request.include_terminated), request, lambda i: str(i.node_id)
        )
        return provisioner_pb2.ListInstancesResponse(
            instances=[convert.instance_to_proto(i) for i in found], next_page_token=token
        )
