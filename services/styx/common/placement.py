"""Placement requests and answers exchanged by the scheduler and the broker.

Plain dataclasses; the scheduler's gRPC adapter and the broker's servicer convert them to
and from ``styx.v1`` AllocationRequest / AllocationResult.
"""

from __future__ import annotations

from dataclasses import dataclass

from styx.common.resources import Resources

PLACED, WAITING, INFEASIBLE = "placed", "waiting", "infeasible"


@dataclass(frozen=True)
class Ask:
    """One placement request: a task attempt (``allocation_id`` "task/attempt") and its needs."""

    allocation_id: str
    task_id: str
    resources: Resources
    # Distinct nodes wanted at once (a gang); each gets ``resources``.
    num_nodes: int = 1


@dataclass(frozen=True)
class NodeSlot:
    """Where one rank of a multi-node placement landed."""

    node_id: str
    gpu_indices: tuple[int, ...]
    address: str = ""


@dataclass(frozen=True)
class Placement:
    """The answer to an Ask: PLACED (with node and GPUs), WAITING, or INFEASIBLE (with why).

    A placed gang (num_nodes > 1) lists every rank in ``nodes``; node_id and gpu_indices
    are rank 0's.
    """

    allocation_id: str
    outcome: str
    node_id: str = ""
    gpu_indices: tuple[int, ...] = ()
    reason: str = ""
    nodes: tuple[NodeSlot, ...] = ()


def rank_allocation_id(allocation_id: str, rank: int) -> str:
    """The allocation of one rank: rank 0 keeps the attempt's id, rank r adds "#r"."""
    return allocation_id if rank == 0 else f"{allocation_id}#{rank}"
