"""The broker's node registry: join tokens, registration, heartbeats and leases.

Nodes live in ``broker_nodes`` (the truth) and in an in-memory view that placement reads.
Every change is written first and applied to memory only after its transaction commits,
so a failed write never leaves the view ahead of the store. The registry takes no lock of
its own: the broker calls it under its lock.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from styx.broker import tables as t
from styx.broker.model import ABSENT, GONE, LOST, READY, NodeView
from styx.common.clock import Clock
from styx.common.errors import InvalidArgument, NotFound, PermissionDenied
from styx.common.resources import Capacity, GpuDevice

log = logging.getLogger(__name__)


class NodeRegistry:
    """Nodes by id, with their leases; usage counters are kept by the allocation ledger."""

    def __init__(self, engine: Engine, clock: Clock, lease_seconds: float) -> None:
        self._engine = engine
        self._clock = clock
        self.lease_seconds = lease_seconds
        self.nodes: dict[str, NodeView] = {}
        self.load(fresh_leases=True)

    def load(self, fresh_leases: bool = False) -> None:
        """(Re)read every node from the store, replacing the view; usage is the ledger's to count.

        ``fresh_leases``: a (re)started broker gives every node a fresh lease instead of
        expiring all; a replica catching up keeps the stored heartbeats.
        """
        stamp = self._clock.now()
        nodes: dict[str, NodeView] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(select(t.nodes)):
                nodes[row.node_id] = NodeView(
                    node_id=row.node_id,
                    provider=row.provider,
                    instance_id=row.instance_id,
                    region=row.region,
                    zone=row.zone,
                    instance_type=row.instance_type,
                    total=Capacity(row.cpus, row.memory_gib, [GpuDevice(**g) for g in json.loads(row.gpus_json)]),
                    labels=json.loads(row.labels_json),
                    state=row.state,
                    address=row.address,
                    registered_at=row.registered_at,
                    last_heartbeat=stamp if fresh_leases else row.last_heartbeat,
                )
            if fresh_leases:
                conn.execute(update(t.nodes).where(t.nodes.c.state == READY).values(last_heartbeat=stamp))
                conn.commit()
        self.nodes.clear()
        self.nodes.update(nodes)

    # ---- join tokens ---------------------------------------------------------------------
    def join(self, node_id: str, request_id: str) -> None:
        """Redeem ``node_id``'s join token for ``request_id``; PermissionDenied once used by another.

        The insert decides (primary key on node_id), so two brokers, or two racing copies
        of a boot script, cannot both redeem it; the winner's retries (same request_id)
        succeed again, because its first reply may have been lost.
        """
        if not node_id:
            raise InvalidArgument("node_id: required (the node the join token was minted for)")
        if not request_id or len(request_id) > 160:
            raise InvalidArgument("request_id: required, 1-160 characters (a UUID is fine)")
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(t.node_joins).values(node_id=node_id, request_id=request_id, joined_at=self._clock.now())
                )
            log.info("node joined", extra={"node_id": node_id})
            return
        except IntegrityError:
            pass
        with self._engine.connect() as conn:
            first = conn.execute(select(t.node_joins.c.request_id).where(t.node_joins.c.node_id == node_id)).scalar()
        if first != request_id:
            log.warning("join token reused", extra={"node_id": node_id})
            raise PermissionDenied(
                f"node_id: the join token of node {node_id!r} was already used; a node joins once "
                "(its agent keeps the node token it got). Terminate the instance and launch a new one."
            )

    # ---- registration ----------------------------------------------------------------------
    def stage_register(self, conn: Connection, view: NodeView) -> NodeView:
        """Write ``view`` (a new or refreshed node) in ``conn``; return the view to ``install``.

        Usage counters of a known node carry over: a re-registration does not free its tasks.
        """
        if not view.node_id:
            raise InvalidArgument("node_id: required")
        if view.total.cpus <= 0:
            raise InvalidArgument(f"capacity.cpus: must be greater than 0, got {view.total.cpus}")
        if view.total.memory_gib < 0:
            raise InvalidArgument("capacity.memory_gib: must not be negative")
        existing = self.nodes.get(view.node_id)
        row = {
            "provider": view.provider,
            "instance_id": view.instance_id,
            "region": view.region,
            "zone": view.zone,
            "instance_type": view.instance_type,
            "cpus": view.total.cpus,
            "memory_gib": view.total.memory_gib,
            "gpus_json": json.dumps([asdict(g) for g in view.total.gpus]),
            "labels_json": json.dumps(view.labels),
            "state": READY,
            "last_heartbeat": view.last_heartbeat,
            "address": view.address,
        }
        if existing is None:
            conn.execute(insert(t.nodes).values(node_id=view.node_id, registered_at=view.registered_at, **row))
        else:
            conn.execute(update(t.nodes).where(t.nodes.c.node_id == view.node_id).values(**row))
            view.registered_at = existing.registered_at
            view.used_cpus, view.used_memory_gib = existing.used_cpus, existing.used_memory_gib
            view.used_gpus = existing.used_gpus
        return view

    def install(self, view: NodeView) -> None:
        """Make a staged registration visible (after its transaction committed)."""
        self.nodes[view.node_id] = view
        log.info("node registered", extra={"node_id": view.node_id, "cpus": view.total.cpus})

    def heartbeat(self, node_id: str) -> bool:
        """Renew a node's lease (in the store, where every replica's lease check reads it);
        False when the node is unknown or gone (it must register)."""
        node = self.nodes.get(node_id)
        if node is None or node.state == GONE:
            return False
        stamp = self._clock.now()
        with self._engine.begin() as conn:
            values = {"last_heartbeat": stamp, **({"state": READY} if node.state == LOST else {})}
            conn.execute(update(t.nodes).where(t.nodes.c.node_id == node_id).values(**values))
        node.state, node.last_heartbeat = READY, stamp
        return True

    def mark_gone(self, conn: Connection, node_id: str) -> bool:
        """Write GONE for a known node in ``conn``; True when it was not gone yet (apply with ``set_state``)."""
        node = self.get(node_id)
        if node.state == GONE:
            return False
        conn.execute(update(t.nodes).where(t.nodes.c.node_id == node_id).values(state=GONE))
        return True

    def set_state(self, node_id: str, state: str) -> None:
        """Apply a state that was written and committed."""
        self.nodes[node_id].state = state

    def expire_leases(self) -> list[NodeView]:
        """Mark READY nodes whose stored heartbeat is older than the lease LOST; return them.

        The store, not this process's view, says when a node last beat: its heartbeats may
        have reached another replica.
        """
        cutoff = self._clock.now() - self.lease_seconds
        c = t.nodes.c
        with self._engine.begin() as conn:
            silent = conn.execute(select(c.node_id).where(c.state == READY, c.last_heartbeat < cutoff)).scalars().all()
            if silent:
                conn.execute(update(t.nodes).where(c.node_id.in_(silent), c.state == READY).values(state=LOST))
        lost = [self.nodes[i] for i in silent if i in self.nodes]
        for node in lost:
            node.state = LOST
            log.warning("node lost: no heartbeat", extra={"node_id": node.node_id})
        return lost

    # ---- reads -------------------------------------------------------------------------------
    def get(self, node_id: str) -> NodeView:
        """One node; NotFound when unknown."""
        node = self.nodes.get(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} not found; `sky status --nodes` lists nodes")
        return node

    def ready(self, node_id: str) -> bool:
        """Whether the node registered and is READY."""
        node = self.nodes.get(node_id)
        return node is not None and node.state == READY

    def listed(self, include_lost: bool = False) -> list[NodeView]:
        """Nodes, oldest registration first."""
        nodes = [n for n in self.nodes.values() if include_lost or n.state not in ABSENT]
        return sorted(nodes, key=lambda n: (n.registered_at, n.node_id))

    def counts(self) -> dict[tuple[str, ...], float]:
        """(provider, state) -> number of nodes (for metrics)."""
        out: dict[tuple[str, ...], float] = {}
        for n in self.nodes.values():
            out[(n.provider, n.state)] = out.get((n.provider, n.state), 0) + 1
        return out
