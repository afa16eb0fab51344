"""The broker's gRPC adapter to the provisioner (implements core.ProvisionerPort)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc

from styx.common.clients import open_channel
from styx.common.errors import Unavailable
from styx.common.offers import Offer, offer_from_pb, offer_to_pb
from styx.common.status import error_from_rpc
from styx.v1 import provisioner_pb2, provisioner_pb2_grpc

_STATES = {
    provisioner_pb2.OPERATION_STATE_PENDING: "pending",
    provisioner_pb2.OPERATION_STATE_RUNNING: "running",
    provisioner_pb2.OPERATION_STATE_DONE: "done",
    provisioner_pb2.OPERATION_STATE_FAILED: "failed",
}
_KINDS = {
    provisioner_pb2.PROVIDER_ERROR_KIND_CAPACITY: "capacity",
    provisioner_pb2.PROVIDER_ERROR_KIND_QUOTA: "quota",
    provisioner_pb2.PROVIDER_ERROR_KIND_AUTH: "auth",
    provisioner_pb2.PROVIDER_ERROR_KIND_INVALID: "invalid",
    provisioner_pb2.PROVIDER_ERROR_KIND_INTERNAL: "internal",
}
# gRPC status of a refused call -> the domain error the broker's failover understands.
_REFUSALS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
T = TypeVar("T")


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a stub call; refusals become their domain error, anything else Unavailable."""
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as exc:
        error = error_from_rpc(exc, prefix="provisioner: ")
        if error.code in _REFUSALS:
            raise error from None
        raise Unavailable(error.message) from None


# Seconds ListOffers may take (see GrpcProvisioner.list_offers).
LIST_OFFERS_TIMEOUT_S = 20.0


class GrpcProvisioner:
    """Calls styx.v1.Provisioner with short deadlines (the broker holds its lock meanwhile)."""

    def __init__(self, endpoint: str, token: str, timeout_s: float = 5.0) -> None:
        self._stub = provisioner_pb2_grpc.ProvisionerStub(open_channel(endpoint, token))
        self._timeout = timeout_s
        #: Enabled provider -> what its check says (e.g. which SSH hosts or contexts answer),
        #: as of the last ``list_providers``: quoted when a request's infra has no offers.
        self.notes: dict[str, str] = {}

    def list_offers(self) -> list[Offer]:
        """Offers of every enabled provider."""
        # Host providers answer from live infrastructure (SSH hosts probed, clusters listed):
        # slower than a lookup, and read without the broker's lock, so a longer deadline.
        timeout = max(self._timeout, LIST_OFFERS_TIMEOUT_S)
        reply = _call(self._stub.ListOffers, provisioner_pb2.ListOffersRequest(), timeout=timeout)
        return [offer_from_pb(o) for o in reply.offers]

    def list_providers(self) -> dict[str, str]:
        """Provider name -> "" when enabled, else the reason (and hint) it is disabled."""
        reply = _call(self._stub.ListProviders, provisioner_pb2.ListProvidersRequest(), timeout=self._timeout)
        out = {}
        for p in reply.providers:
            why = "" if p.enabled else (p.reason or "disabled") + (f"; {p.hint}" if p.hint else "")
            out[p.name] = why
        self.notes = {p.name: p.reason for p in reply.providers if p.enabled and p.reason}
        return out

    def list_capabilities(self) -> dict[str, tuple[str, ...]]:
        """Provider name -> the capabilities it declares."""
        reply = _call(self._stub.ListProviders, provisioner_pb2.ListProvidersRequest(), timeout=self._timeout)
        return {p.name: tuple(p.capabilities) for p in reply.providers}

    def provision(
        self, request_id: str, node_id: str, offer: Offer, spot: bool, labels: Mapping[str, str] | None = None
    ) -> str:
        """Start creating a node; returns the operation id."""
        op = _call(
            self._stub.Provision,
            provisioner_pb2.ProvisionRequest(
                request_id=request_id, offer=offer_to_pb(offer), node_id=node_id, use_spot=spot, labels=labels or {}
            ),
            timeout=self._timeout,
        )
        return str(op.operation_id)

    def operation_state(self, operation_id: str) -> tuple[str, str, str]:
        """("pending"|"running"|"done"|"failed", error message, error kind)."""
        op = _call(
            self._stub.GetOperation,
            provisioner_pb2.GetOperationRequest(operation_id=operation_id),
            timeout=self._timeout,
        )
        return _STATES.get(op.state, "pending"), op.error.message, _KINDS.get(op.error.kind, "")

    def terminate(self, node_id: str) -> None:
        """Start terminating the instance behind ``node_id`` (idempotent)."""
        from styx.common.ids import new_id

        request = provisioner_pb2.TerminateRequest(request_id=new_id("down"), node_id=node_id)
        _call(self._stub.Terminate, request, timeout=self._timeout)

    def stop(self, node_id: str) -> None:
        """Start stopping the instance behind ``node_id``."""
        from styx.common.ids import new_id

        request = provisioner_pb2.StopRequest(request_id=new_id("stop"), node_id=node_id)
        _call(self._stub.Stop, request, timeout=self._timeout)

    def start(self, node_id: str) -> None:
        """Start the stopped instance behind ``node_id``."""
        from styx.common.ids import new_id

        request = provisioner_pb2.StartRequest(request_id=new_id("start"), node_id=node_id)
        _call(self._stub.Start, request, timeout=self._timeout)
