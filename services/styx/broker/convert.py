"""Protobuf <-> domain conversion for the broker (and the resource messages it shares)."""

from __future__ import annotations

from styx.broker.core import INFEASIBLE, PLACED, WAITING, Ask, NodeView, Placement
from styx.common.resources import Accelerator, Capacity, GpuDevice, Resources
from styx.common.timeutil import to_timestamp
from styx.v1 import broker_pb2, common_pb2

_OUTCOMES = {
    PLACED: broker_pb2.ALLOCATION_OUTCOME_PLACED,
    WAITING: broker_pb2.ALLOCATION_OUTCOME_WAITING,
    INFEASIBLE: broker_pb2.ALLOCATION_OUTCOME_INFEASIBLE,
}
_NODE_STATES = {"READY": common_pb2.NODE_STATE_READY, "LOST": common_pb2.NODE_STATE_LOST}


def resources_from_pb(msg: common_pb2.ResourceRequest) -> Resources:
    """ResourceRequest -> Resources (no defaults applied: the scheduler applied them)."""
    return Resources(
        cpus=msg.cpus,
        cpus_at_least=msg.cpus_at_least,
        memory_gib=msg.memory_gib,
        memory_at_least=msg.memory_at_least,
        accelerators=tuple(Accelerator(a.name, a.count) for a in msg.accelerators),
        use_spot=msg.use_spot,
        infra=msg.infra,
        disk_gb=msg.disk_gb,
    )


def resources_to_pb(res: Resources) -> common_pb2.ResourceRequest:
    """Resources -> ResourceRequest."""
    return common_pb2.ResourceRequest(
        cpus=res.cpus,
        cpus_at_least=res.cpus_at_least,
        memory_gib=res.memory_gib,
        memory_at_least=res.memory_at_least,
        accelerators=[common_pb2.AcceleratorRequest(name=a.name, count=a.count) for a in res.accelerators],
        use_spot=res.use_spot,
        infra=res.infra,
        disk_gb=res.disk_gb,
    )


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
    )


def asks_from_pb(msg: broker_pb2.AllocateRequest) -> list[Ask]:
    """AllocateRequest -> asks."""
    return [Ask(r.allocation_id, r.task_id, resources_from_pb(r.resources)) for r in msg.requests]


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
            )
            for p in placements
        ]
    )
