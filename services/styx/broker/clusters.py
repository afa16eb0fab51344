"""Named clusters (``sky launch -c NAME``): nodes reserved for the tasks pinned to them.

A cluster is created with the resources each node must offer and a node count; its nodes
are provisioned at once through the broker's ranked offers (with the same failover as
any node) and carry the ``styx.dev/cluster`` label when they register. Tasks pinned to the
cluster run only on its nodes, and the shared pool never uses them. ``down`` terminates
the nodes; autostop tears an idle cluster down after its idle minutes.

The registry is part of the broker and is called under the broker's lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, insert, select, update

from styx.broker import tables as t
from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound
from styx.common.resources import Resources
from styx.common.timeutil import now

if TYPE_CHECKING:
    from styx.broker.core import Broker
    from styx.common.placement import Ask, Placement

log = logging.getLogger(__name__)

CLUSTER_LABEL = "styx.dev/cluster"
INIT, UP, DOWN, FAILED = "INIT", "UP", "DOWN", "FAILED"
STOPPED, STARTING = "STOPPED", "STARTING"
# States in which the cluster owns its nodes (running or not).
LIVE = frozenset({INIT, UP, STOPPED, STARTING})
# Provisioning attempts per missing node before the cluster is declared FAILED.
MAX_ATTEMPTS = 8
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


@dataclass
class ClusterView:
    """A cluster as the broker tracks it."""

    name: str
    state: str
    resources: Resources
    num_nodes: int
    node_ids: list[str] = field(default_factory=list)
    idle_minutes: int = 0
    autostop_down: bool = False
    reason: str = ""
    created_at: float = 0.0
    last_used_at: float = 0.0
    attempts: int = 0
    hourly_price: float = 0.0
    where: str = ""


def _row(c: ClusterView) -> dict[str, Any]:
    return {
        "name": c.name,
        "state": c.state,
        "resources_json": json.dumps(asdict(c.resources)),
        "num_nodes": c.num_nodes,
        "node_ids_json": json.dumps(c.node_ids),
        "idle_minutes": c.idle_minutes,
        "autostop_down": c.autostop_down,
        "reason": c.reason,
        "created_at": c.created_at,
        "last_used_at": c.last_used_at,
        "attempts": c.attempts,
        "hourly_price": c.hourly_price,
        "location": c.where,
    }


class Clusters:
    """The broker's cluster registry (in memory, written through to broker_clusters)."""

    def __init__(self, engine: Engine, broker: Broker) -> None:
        self._engine = engine
        self._broker = broker
        self._clusters: dict[str, ClusterView] = {}
        self._node_cluster: dict[str, str] = {}
        with engine.connect() as conn:
            for r in conn.execute(select(t.clusters)):
                view = ClusterView(
                    name=r.name,
                    state=r.state,
                    resources=Resources(**json.loads(r.resources_json)),
                    num_nodes=r.num_nodes,
                    node_ids=json.loads(r.node_ids_json),
                    idle_minutes=r.idle_minutes,
                    autostop_down=r.autostop_down,
                    reason=r.reason,
                    created_at=r.created_at,
                    last_used_at=r.last_used_at,
                    attempts=r.attempts,
                    hourly_price=r.hourly_price,
                    where=r.location,
                )
                self._clusters[view.name] = view
                if view.state in LIVE:
                    self._node_cluster.update(dict.fromkeys(view.node_ids, view.name))

    # ---- reads ---------------------------------------------------------------------------
    def get(self, name: str) -> ClusterView:
        """One cluster; NotFound when unknown."""
        found = self._clusters.get(name)
        if found is None:
            raise NotFound(f"cluster {name!r} not found; `sky launch -c {name} ...` creates it")
        return found

    def list(self, include_down: bool = False) -> list[ClusterView]:
        """Clusters, newest first."""
        views = [c for c in self._clusters.values() if include_down or c.state != DOWN]
        return sorted(views, key=lambda c: -c.created_at)

    def cluster_of_node(self, node_id: str) -> str:
        """The live cluster a node belongs to, or ""."""
        return self._node_cluster.get(node_id, "")

    # ---- changes -------------------------------------------------------------------------
    def create(
        self, name: str, resources: Resources, num_nodes: int, idle_minutes: int, autostop_down: bool
    ) -> ClusterView:
        """Create a cluster and start provisioning its nodes; an existing live one is reused."""
        if not _NAME.match(name):
            raise InvalidArgument(f"name: {name!r} must be 1-40 lower-case letters, digits or '-', starting alnum")
        if not 1 <= num_nodes <= 64:
            raise InvalidArgument(f"num_nodes: must be 1-64, got {num_nodes}")
        existing = self._clusters.get(name)
        if existing is not None and existing.state == STOPPED:
            raise InvalidArgument(f"name: cluster {name!r} is stopped; `sky start {name}` first")
        if existing is not None and existing.state in LIVE:
            if idle_minutes:
                self.set_autostop(name, idle_minutes, autostop_down)
            return existing
        stamp = now()
        view = ClusterView(
            name=name,
            state=INIT,
            resources=resources,
            num_nodes=num_nodes,
            idle_minutes=idle_minutes,
            autostop_down=autostop_down,
            created_at=stamp,
            last_used_at=stamp,
        )
        # Refuse what no offer could ever hold now, instead of a cluster that FAILS later.
        reason = self._broker.infeasible_reason(resources)
        if reason:
            raise InvalidArgument(f"resources: {reason}")
        with self._engine.begin() as conn:
            conn.execute(delete(t.clusters).where(t.clusters.c.name == name))
            conn.execute(insert(t.clusters).values(**_row(view)))
        self._clusters[name] = view
        log.info("cluster created", extra={"cluster": name, "nodes": num_nodes})
        self._provision_missing(view)
        return view

    def set_autostop(self, name: str, idle_minutes: int, down: bool) -> ClusterView:
        """Set (or clear with 0) the cluster's autostop."""
        view = self.get(name)
        if idle_minutes < 0:
            raise InvalidArgument("idle_minutes: must not be negative")
        view.idle_minutes, view.autostop_down = idle_minutes, down
        self._save(view)
        return view

    def down(self, name: str, reason: str = "torn down by user") -> ClusterView:
        """Terminate the cluster's nodes and mark it DOWN; idempotent."""
        view = self.get(name)
        if view.state == DOWN:
            return view
        for node_id in view.node_ids:
            self._broker.forget_node(node_id, f"cluster {name} {reason}")
            with contextlib.suppress(NotFound):  # never created (a failed attempt): nothing to terminate
                self._broker.terminate_node(node_id)
        view.state, view.reason = DOWN, reason
        for node_id in view.node_ids:
            self._node_cluster.pop(node_id, None)
        self._save(view)
        log.info("cluster down", extra={"cluster": name, "reason": reason})
        return view

    def stop(self, name: str, reason: str = "stopped by user") -> ClusterView:
        """Stop the cluster's instances (where the provider can); idempotent.

        Raises FailedPrecondition (from the provisioner) when the provider cannot stop
        instances, before anything changed.
        """
        view = self.get(name)
        if view.state == STOPPED:
            return view
        if view.state not in (UP, STARTING):
            raise FailedPrecondition(f"cluster {name!r} is {view.state}; only an UP cluster can be stopped")
        for node_id in view.node_ids:
            self._broker.power_node(node_id, "stop")
            self._broker.forget_node(node_id, f"cluster {name} {reason}")
        view.state, view.reason = STOPPED, reason
        self._save(view)
        log.info("cluster stopped", extra={"cluster": name, "reason": reason})
        return view

    def start(self, name: str) -> ClusterView:
        """Start a stopped cluster's instances; it is UP once its agents re-register."""
        view = self.get(name)
        if view.state in (UP, STARTING, INIT):
            return view
        if view.state != STOPPED:
            raise FailedPrecondition(f"cluster {name!r} is {view.state}; `sky launch -c {name}` recreates it")
        for node_id in view.node_ids:
            self._broker.power_node(node_id, "start")
        view.state, view.reason, view.last_used_at = STARTING, "", now()
        self._save(view)
        log.info("cluster starting", extra={"cluster": name})
        return view

    def touch(self, node_id: str) -> None:
        """A placement or release on ``node_id``: its cluster is in use now."""
        name = self._node_cluster.get(node_id)
        if name:
            self._clusters[name].last_used_at = now()

    # ---- placement -----------------------------------------------------------------------
    def no_fit(self, ask: Ask) -> Placement:
        """Answer for an ask pinned to a cluster whose nodes have no room (never provisions)."""
        from styx.common.placement import INFEASIBLE, WAITING, Placement

        name = ask.resources.cluster
        view = self._clusters.get(name)
        if view is None or view.state == DOWN:
            why = "does not exist" if view is None else f"is down ({view.reason})"
            return Placement(ask.allocation_id, INFEASIBLE, reason=f"cluster {name!r} {why}; sky launch -c {name}")
        if view.state == FAILED:
            return Placement(ask.allocation_id, INFEASIBLE, reason=f"cluster {name!r} failed: {view.reason}")
        if view.state == STOPPED:
            return Placement(ask.allocation_id, INFEASIBLE, reason=f"cluster {name!r} is stopped; sky start {name}")
        if view.state == STARTING:
            return Placement(ask.allocation_id, WAITING, reason=f"cluster {name!r} is starting")
        if ask.num_nodes > view.num_nodes:
            return Placement(
                ask.allocation_id,
                INFEASIBLE,
                reason=f"cluster {name!r} has {view.num_nodes} node(s); the task needs {ask.num_nodes} at once",
            )
        nodes = [n for n in (self._broker.node_or_none(i) for i in view.node_ids) if n is not None]
        able = sum(1 for n in nodes if self._broker.node_could_fit(n, ask.resources))
        if ask.num_nodes > 1 and len(nodes) >= view.num_nodes and able < ask.num_nodes:
            return Placement(
                ask.allocation_id,
                INFEASIBLE,
                reason=f"cluster {name!r}: only {able} of its nodes can hold the task; it needs {ask.num_nodes}",
            )
        if nodes and not able:
            biggest = max(nodes, key=lambda n: n.total.cpus)
            return Placement(
                ask.allocation_id,
                INFEASIBLE,
                reason=f"cluster {name!r} nodes cannot hold it: {biggest.node_id} has {biggest.total.cpus:g} CPUs, "
                f"{biggest.total.memory_gib:.1f} GiB, {len(biggest.total.gpus)} GPUs",
            )
        if view.state == INIT:
            return Placement(ask.allocation_id, WAITING, reason=f"cluster {name!r} is starting")
        return Placement(ask.allocation_id, WAITING, reason=f"waiting for room on cluster {name!r}")

    # ---- reconciliation ------------------------------------------------------------------
    def reconcile(self) -> None:
        """Mark clusters UP, replace failed provisions, and apply autostop."""
        stamp = now()
        for view in list(self._clusters.values()):
            if view.state == STARTING:
                if all(self._broker.node_ready(i) for i in view.node_ids):
                    view.state, view.last_used_at = UP, stamp
                    self._save(view)
                    log.info("cluster up", extra={"cluster": view.name})
                continue
            if view.state not in (INIT, UP):
                continue
            if view.state == INIT:
                self._provision_missing(view)
                registered = [i for i in view.node_ids if self._broker.node_ready(i)]
                if len(registered) >= view.num_nodes:
                    view.state, view.last_used_at = UP, stamp
                    self._save(view)
                    log.info("cluster up", extra={"cluster": view.name})
            elif (
                view.idle_minutes
                and stamp - view.last_used_at >= view.idle_minutes * 60
                and not self._broker.has_allocations(view.node_ids)
            ):
                why = f"autostopped after {view.idle_minutes} idle minutes"
                if view.autostop_down:
                    self.down(view.name, why)
                    continue
                try:
                    self.stop(view.name, why)
                except FailedPrecondition as exc:
                    # The provider cannot stop instances (local): tearing down is what stops billing.
                    self.down(view.name, f"{why} (torn down: {exc.message})")

    def _provision_missing(self, view: ClusterView) -> None:
        live = [i for i in view.node_ids if self._broker.node_pending_or_ready(i)]
        missing = view.num_nodes - len(live)
        while missing > 0:
            if view.attempts >= MAX_ATTEMPTS * view.num_nodes:
                view.state = FAILED
                last = f": {view.reason}" if view.reason else ""
                view.reason = f"no node could be provisioned after {view.attempts} attempts{last}"
                self._save(view)
                log.warning("cluster failed", extra={"cluster": view.name})
                return
            view.attempts += 1
            node_id, offer, price, why = self._broker.provision_for(
                f"cluster:{view.name}/{view.attempts}", view.resources
            )
            if node_id is None:
                view.reason = why  # shown while INIT, and as the cause if it ends FAILED
                self._save(view)
                return  # nothing available right now; the next reconcile tries again
            view.node_ids.append(node_id)
            view.reason = ""
            self._node_cluster[node_id] = view.name
            if offer is not None and not view.where:
                view.where, view.hourly_price = offer.place, price
            missing -= 1
            self._save(view)

    def _save(self, view: ClusterView) -> None:
        with self._engine.begin() as conn:
            values = _row(view)
            del values["name"]
            conn.execute(update(t.clusters).where(t.clusters.c.name == view.name).values(**values))
