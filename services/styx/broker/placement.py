"""Bin packing: the allocation ledger and best-fit placement of tasks and gangs on live nodes.

Best fit: among READY nodes that satisfy the request, take the one left with the least
free CPU (then memory), so big nodes stay free for big tasks. Everything here works on
the in-memory view under the broker's lock; nothing here talks to the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

from sqlalchemy import Connection, select, update

from styx.broker import tables as t
from styx.broker.model import _EPS, NodeView, _Allocation, _FreeIndex, _in_infra
from styx.broker.optimizer import alternatives
from styx.common.placement import PLACED, Ask, NodeSlot, Placement, rank_allocation_id
from styx.common.resources import Resources, gpu_matches, infra_parts
from styx.common.store import bulk_insert


class Ledger:
    """Live allocations by id, and the usage they put on nodes."""

    def __init__(self, nodes: Mapping[str, NodeView]) -> None:
        self._nodes = nodes
        self.allocations: dict[str, _Allocation] = {}

    def load(self, conn: Connection) -> None:
        """(Re)read the live allocations and count them on the nodes (whose usage starts at 0)."""
        self.allocations.clear()
        for node in self._nodes.values():
            node.used_cpus, node.used_memory_gib = 0.0, 0.0
            node.used_gpus = set()
        query = select(t.allocations).where(t.allocations.c.released.is_(False))
        for row in conn.execute(query):
            self.apply(
                _Allocation(
                    row.allocation_id,
                    row.task_id,
                    row.node_id,
                    row.cpus,
                    row.memory_gib,
                    tuple(json.loads(row.gpu_indices_json)),
                )
            )

    def apply(self, alloc: _Allocation) -> None:
        """Count ``alloc`` on its node."""
        self.allocations[alloc.allocation_id] = alloc
        node = self._nodes.get(alloc.node_id)
        if node is not None:
            node.used_cpus += alloc.cpus
            node.used_memory_gib += alloc.memory_gib
            node.used_gpus.update(alloc.gpu_indices)

    def undo(self, alloc: _Allocation) -> None:
        """Take ``alloc`` off its node (a release, or a placement whose write failed)."""
        self.allocations.pop(alloc.allocation_id, None)
        node = self._nodes.get(alloc.node_id)
        if node is not None:
            node.used_cpus = max(0.0, node.used_cpus - alloc.cpus)
            node.used_memory_gib = max(0.0, node.used_memory_gib - alloc.memory_gib)
            node.used_gpus.difference_update(alloc.gpu_indices)

    @staticmethod
    def write(conn: Connection, allocs: Sequence[_Allocation], stamp: float) -> None:
        """Insert new allocations in ``conn``."""
        bulk_insert(
            conn,
            t.allocations,
            [
                {
                    "allocation_id": a.allocation_id,
                    "task_id": a.task_id,
                    "node_id": a.node_id,
                    "cpus": a.cpus,
                    "memory_gib": a.memory_gib,
                    "gpu_indices_json": json.dumps(list(a.gpu_indices)),
                    "created_at": stamp,
                    "released": False,
                }
                for a in allocs
            ],
        )

    @staticmethod
    def write_release(conn: Connection, allocation_ids: Sequence[str]) -> None:
        """Mark allocations released in ``conn``."""
        c = t.allocations.c
        conn.execute(update(t.allocations).where(c.allocation_id.in_(list(allocation_ids))).values(released=True))

    def on_nodes(self, node_ids: Sequence[str]) -> bool:
        """Whether any of these nodes holds a live allocation."""
        wanted = set(node_ids)
        return any(a.node_id in wanted for a in self.allocations.values())


def fitting(res: Resources, index: _FreeIndex) -> Iterator[tuple[NodeView, tuple[int, ...]]]:
    """(node, GPU indices) of every node with room for ``res`` now, best fit first."""
    want_p, want_r, want_z = infra_parts(res.infra)
    for node, free_mem in index.candidates(res.cpus):
        if free_mem + _EPS < res.memory_gib:
            continue
        if (
            (want_p and want_p != node.provider)
            or (want_r and want_r != node.region)
            or (want_z and want_z != node.zone)
            or (res.instance_type and res.instance_type != node.instance_type)
            or node.cluster != res.cluster
            or not node.runs(res)
        ):
            continue
        gpus: tuple[int, ...] = ()
        if res.accelerators:
            for alt in res.accelerators:
                free = node.free_gpus(alt.name)
                if len(free) >= alt.count:
                    gpus = tuple(free[: alt.count])
                    break
            else:
                continue
        yield node, gpus


def place(ask: Ask, index: _FreeIndex) -> _Allocation | None:
    """One allocation on the best-fitting node for the first alternative that fits, or None."""
    _, alts = alternatives(ask.resources)
    for res in alts:
        # Nodes come in best-fit order, so the first node that satisfies everything is the best fit.
        for node, gpus in fitting(res, index):
            return _Allocation(ask.allocation_id, ask.task_id, node.node_id, res.cpus, res.memory_gib, gpus)
    return None


def place_gang(ask: Ask, index: _FreeIndex) -> list[_Allocation]:
    """All ranks of a gang on distinct nodes (best fit each), or [] when they do not all fit."""
    _, alts = alternatives(ask.resources)
    for res in alts:
        found: list[_Allocation] = []
        for node, gpus in fitting(res, index):
            rank_id = rank_allocation_id(ask.allocation_id, len(found))
            found.append(_Allocation(rank_id, ask.task_id, node.node_id, res.cpus, res.memory_gib, gpus))
            if len(found) == ask.num_nodes:
                return found
    return []


def placed(ask: Ask, allocs: Sequence[_Allocation], nodes: Mapping[str, NodeView]) -> Placement:
    """The PLACED answer for ``allocs`` (a gang's answer lists every rank's node)."""
    first = allocs[0]
    if ask.num_nodes <= 1:
        return Placement(ask.allocation_id, PLACED, first.node_id, first.gpu_indices)
    slots = tuple(NodeSlot(a.node_id, a.gpu_indices, n.address if (n := nodes.get(a.node_id)) else "") for a in allocs)
    return Placement(ask.allocation_id, PLACED, first.node_id, first.gpu_indices, nodes=slots)


def existing(ask: Ask, first: _Allocation, ledger: Ledger, nodes: Mapping[str, NodeView]) -> Placement:
    """A repeated ask: answer with what was stored the first time (every rank of a gang)."""
    allocs = [first]
    for r in range(1, ask.num_nodes):
        alloc = ledger.allocations.get(rank_allocation_id(ask.allocation_id, r))
        if alloc is not None:
            allocs.append(alloc)
    return placed(ask, allocs, nodes)


def node_could_fit(node: NodeView, res: Resources) -> bool:
    """Whether the node's total capacity could ever hold ``res`` (its cluster label aside)."""
    res = replace(res, cluster="") if res.cluster else res
    if not _in_infra(res, node.provider, node.region, node.zone):
        return False
    if (res.instance_type and res.instance_type != node.instance_type) or not node.runs(res):
        return False
    if node.total.cpus + _EPS < res.cpus or node.total.memory_gib + _EPS < res.memory_gib:
        return False
    return not res.accelerators or any(
        sum(1 for g in node.total.gpus if gpu_matches(g.name, a.name)) >= a.count for a in res.accelerators
    )
