"""The broker's gRPC adapter to the provisioner (implements core.ProvisionerPort)."""

from __future__ import annotations

from styx.common.clients import open_channel
from styx.common.offers import Offer, offer_from_pb, offer_to_pb
from styx.v1 import provisioner_pb2, provisioner_pb2_grpc

_STATES = {
    provisioner_pb2.OPERATION_STATE_PENDING: "pending",
    provisioner_pb2.OPERATION_STATE_RUNNING: "running",
    provisioner_pb2.OPERATION_STATE_DONE: "done",
    provisioner_pb2.OPERATION_STATE_FAILED: "failed",
}


class GrpcProvisioner:
    """Calls styx.v1.Provisioner with short deadlines (the broker holds its lock meanwhile)."""

    def __init__(self, endpoint: str, token: str, timeout_s: float = 5.0) -> None:
        self._stub = provisioner_pb2_grpc.ProvisionerStub(open_channel(endpoint, token))
        self._timeout = timeout_s

    def list_offers(self) -> list[Offer]:
        """Offers of every enabled provider."""
        reply = self._stub.ListOffers(provisioner_pb2.ListOffersRequest(), timeout=self._timeout)
        return [offer_from_pb(o) for o in reply.offers]

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        """Start creating a node; returns the operation id."""
        op = self._stub.Provision(
            provisioner_pb2.ProvisionRequest(
                request_id=request_id, offer=offer_to_pb(offer), node_id=node_id, use_spot=spot
            ),
            timeout=self._timeout,
        )
        return str(op.operation_id)

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        """("pending"|"running"|"done"|"failed", error message)."""
        op = self._stub.GetOperation(
            provisioner_pb2.GetOperationRequest(operation_id=operation_id), timeout=self._timeout
        )
        return _STATES.get(op.state, "pending"), op.error.message
