"""The scheduler's gRPC adapter to the resource broker (implements core.BrokerPort)."""

from __future__ import annotations

from collections.abc import Sequence

from styx.common.clients import DEFAULT_TIMEOUT_S, open_channel
from styx.common.placement import Ask, NodeSlot, Placement
from styx.common.resources import resources_to_pb
from styx.scheduler.model import AbsentNode
from styx.v1 import broker_pb2, broker_pb2_grpc, common_pb2

_OUTCOMES = {
    broker_pb2.ALLOCATION_OUTCOME_PLACED: "placed",
    broker_pb2.ALLOCATION_OUTCOME_WAITING: "waiting",
    broker_pb2.ALLOCATION_OUTCOME_INFEASIBLE: "infeasible",
}


class GrpcBroker:
    """Calls styx.v1.ResourceBroker with deadlines."""

    def __init__(self, endpoint: str, token: str) -> None:
        self._stub = broker_pb2_grpc.ResourceBrokerStub(open_channel(endpoint, token))

    def allocate(self, asks: Sequence[Ask]) -> list[Placement]:
        """Place asks in order."""
        reply = self._stub.Allocate(
            broker_pb2.AllocateRequest(
                requests=[
                    broker_pb2.AllocationRequest(
                        allocation_id=a.allocation_id,
                        task_id=a.task_id,
                        resources=resources_to_pb(a.resources),
                        num_nodes=a.num_nodes if a.num_nodes > 1 else 0,
                    )
                    for a in asks
                ]
            ),
            timeout=DEFAULT_TIMEOUT_S,
        )
        return [
            Placement(
                r.allocation_id,
                _OUTCOMES.get(r.outcome, "waiting"),
                r.node_id,
                tuple(r.gpu_indices),
                r.reason,
                tuple(NodeSlot(n.node_id, tuple(n.gpu_indices), n.address) for n in r.nodes),
            )
            for r in reply.results
        ]

    def release(self, allocation_id: str) -> None:
        """Free an allocation."""
        self._stub.Release(broker_pb2.ReleaseRequest(allocation_id=allocation_id), timeout=DEFAULT_TIMEOUT_S)

    def release_many(self, allocation_ids: list[str]) -> None:
        """Free allocations in one call."""
        self._stub.Release(broker_pb2.ReleaseRequest(allocation_ids=allocation_ids), timeout=DEFAULT_TIMEOUT_S)

    def absent_nodes(self) -> list[AbsentNode]:
        """Nodes the broker marked LOST or GONE, with their last heartbeat."""
        reply = self._stub.ListNodes(broker_pb2.ListNodesRequest(include_lost=True), timeout=DEFAULT_TIMEOUT_S)
        return [
            AbsentNode(n.node_id, n.state == common_pb2.NODE_STATE_GONE, n.last_heartbeat.ToMicroseconds() / 1e6)
            for n in reply.nodes
            if n.state in (common_pb2.NODE_STATE_LOST, common_pb2.NODE_STATE_GONE)
        ]
