"""Placement requests and answers exchanged by the scheduler and the broker.

Plain dataclasses; the scheduler's gRPC adapter and the broker's servicer convert them to
and from ``styx.v1`` AllocationRequest / AllocationResult.
"""

from __future__ import annotations

from dataclasses import dataclass

from styx.common.resources import Resources

PLACED, WAITING, INFEASIBLE = "placed", "waiting", "infeasible"
# How WAITING reasons start when a booting node took the ask ("waiting for node n1 ... to
# boot") or a provision started for it ("provisioning node n2 ..."): the answer to the next
# ask of the same resources may then differ (the booting node has room left, or another
# node may be provisioned).
BOOT_PREFIXES = ("waiting for node ", "provisioning node")


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


def holds_for_same_shape(answer: Placement) -> bool:
    """Whether a WAITING answer holds for every later ask with the same resources and
    num_nodes in the same batch. Free capacity only shrinks within a batch, so unless a
    booting node took the ask (``BOOT_PREFIXES``), the next such ask waits as well."""
    return answer.outcome == WAITING and not answer.reason.startswith(BOOT_PREFIXES)


def rank_allocation_id(allocation_id: str, rank: int) -> str:
    """The allocation of one rank: rank 0 keeps the attempt's id, rank r adds "#r"."""
    return allocation_id if rank == 0 else f"{allocation_id}#{rank}"
