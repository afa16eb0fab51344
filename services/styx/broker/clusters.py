"""Named clusters (``sky launch -c NAME``): nodes reserved for the tasks pinned to them.

A cluster is created with the resources each node must offer and a node count; its nodes
are provisioned at once through the broker's ranked offers (with the same failover as
any node) and carry the ``styx.dev/cluster`` label when they register. Tasks pinned to the
cluster run only on its nodes, and the shared pool never uses them. ``down`` terminates
the nodes; autostop tears an idle cluster down after its idle minutes.

The registry is part of the broker and is called under the broker's lock. It works on the
broker's parts (node registry, allocation ledger, offers, provisioning) directly; none of
them knows about clusters, so nothing here calls back into the broker. Calls to the
provisioner are never made from here: terminations go to the outbox, and stopping or
starting instances is done by the broker between ``stoppable``/``stopped`` (and
``startable``/``starting``), outside its lock.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from styx.broker import tables as t
from styx.broker.model import GONE
from styx.broker.nodes import NodeRegistry
from styx.broker.offers import OfferBook
from styx.broker.placement import Ledger, node_could_fit
from styx.broker.provisioning import Provisioning
from styx.common.clock import Clock
from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound
from styx.common.placement import INFEASIBLE, WAITING, Ask, Placement
from styx.common.resources import IMAGE_LABEL, Resources

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

    def __init__(
        self,
        engine: Engine,
        nodes: NodeRegistry,
        ledger: Ledger,
        book: OfferBook,
        provisioning: Provisioning,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._nodes = nodes
        self._ledger = ledger
        self._book = book
        self._provisioning = provisioning
        self._clock = clock
        self._clusters: dict[str, ClusterView] = {}
        self._node_cluster: dict[str, str] = {}
        self.load()

    def load(self) -> None:
        """(Re)read every cluster from the store, replacing the registry."""
        self._clusters.clear()
        self._node_cluster.clear()
        with self._engine.connect() as conn:
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
        stamp = self._clock.now()
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
        reason = self._book.infeasible_reason(replace(resources, cluster=""))
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
        """Mark the cluster DOWN, its nodes gone and their terminations queued, in one transaction."""
        view = self.get(name)
        if view.state == DOWN:
            return view
        with self._engine.begin() as conn:
            gone = self._release_nodes(conn, view)
            for node_id in view.node_ids:
                self._provisioning.stage_terminate(conn, node_id)
            self._write(conn, view, state=DOWN, reason=reason)
        self._released(view, gone)
        view.state, view.reason = DOWN, reason
        for node_id in view.node_ids:
            self._node_cluster.pop(node_id, None)
        log.info("cluster down", extra={"cluster": name, "reason": reason})
        return view

    def stoppable(self, name: str) -> ClusterView | None:
        """The cluster whose instances the broker is about to stop; None when already STOPPED."""
        view = self.get(name)
        if view.state == STOPPED:
            return None
        if view.state not in (UP, STARTING):
            raise FailedPrecondition(f"cluster {name!r} is {view.state}; only an UP cluster can be stopped")
        return view

    def stopped(self, name: str, reason: str = "stopped by user") -> ClusterView:
        """Its instances were asked to stop: mark the cluster STOPPED and its nodes gone."""
        view = self.get(name)
        with self._engine.begin() as conn:
            gone = self._release_nodes(conn, view)
            self._write(conn, view, state=STOPPED, reason=reason)
        self._released(view, gone)
        view.state, view.reason = STOPPED, reason
        log.info("cluster stopped", extra={"cluster": name, "reason": reason})
        return view

    def startable(self, name: str) -> ClusterView | None:
        """The stopped cluster the broker is about to start; None when it is starting or up already."""
        view = self.get(name)
        if view.state in (UP, STARTING, INIT):
            return None
        if view.state != STOPPED:
            raise FailedPrecondition(f"cluster {name!r} is {view.state}; `sky launch -c {name}` recreates it")
        return view

    def starting(self, name: str) -> ClusterView:
        """Its instances were asked to start: the cluster is UP once its agents re-register."""
        view = self.get(name)
        view.state, view.reason, view.last_used_at = STARTING, "", self._clock.now()
        self._save(view)
        log.info("cluster starting", extra={"cluster": name})
        return view

    def _release_nodes(self, conn: Connection, view: ClusterView) -> builtins.list[str]:
        """Write GONE for the cluster's registered nodes (their tasks re-queue); return them."""
        return [
            node_id
            for node_id in view.node_ids
            if node_id in self._nodes.nodes and self._nodes.mark_gone(conn, node_id)
        ]

    def _released(self, view: ClusterView, gone: builtins.list[str]) -> None:
        for node_id in gone:
            self._nodes.set_state(node_id, GONE)
        for node_id in view.node_ids:
            self._provisioning.pending.pop(node_id, None)

    def touch(self, node_id: str) -> None:
        """A placement or release on ``node_id``: its cluster is in use now."""
        name = self._node_cluster.get(node_id)
        if name:
            view = self._clusters[name]
            view.last_used_at = self._clock.now()
            self._save(view)  # stored: the replica that checks idleness may be another one

    # ---- placement -----------------------------------------------------------------------
    def no_fit(self, ask: Ask) -> Placement:
        """Answer for an ask pinned to a cluster whose nodes have no room (never provisions)."""
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
        nodes = [n for n in (self._nodes.nodes.get(i) for i in view.node_ids) if n is not None]
        able = sum(1 for n in nodes if node_could_fit(n, ask.resources))
        if ask.num_nodes > 1 and len(nodes) >= view.num_nodes and able < ask.num_nodes:
            return Placement(
                ask.allocation_id,
                INFEASIBLE,
                reason=f"cluster {name!r}: only {able} of its nodes can hold the task; it needs {ask.num_nodes}",
            )
        if nodes and not able and ask.resources.image_id and not any(
            n.labels.get(IMAGE_LABEL, "") == ask.resources.image_id for n in nodes
        ):
            ran = sorted({n.labels.get(IMAGE_LABEL, "") or "the provider's default image" for n in nodes})
            return Placement(
                ask.allocation_id,
                INFEASIBLE,
                reason=f"cluster {name!r} nodes run {', '.join(ran)}, not image_id {ask.resources.image_id}; "
                "launch a cluster with that image (sky launch -c NEW --image-id ...)",
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
    def reconcile(self) -> builtins.list[tuple[str, str, bool]]:
        """Mark clusters UP and replace failed provisions; return the idle clusters due for
        autostop as (name, why, down), for the broker to stop outside its lock."""
        stamp = self._clock.now()
        due: builtins.list[tuple[str, str, bool]] = []
        for view in list(self._clusters.values()):
            if view.state == STARTING:
                if all(self._nodes.ready(i) for i in view.node_ids):
                    view.state, view.last_used_at = UP, stamp
                    self._save(view)
                    log.info("cluster up", extra={"cluster": view.name})
                continue
            if view.state not in (INIT, UP):
                continue
            if view.state == INIT:
                self._provision_missing(view)
                registered = [i for i in view.node_ids if self._nodes.ready(i)]
                if len(registered) >= view.num_nodes:
                    view.state, view.last_used_at = UP, stamp
                    self._save(view)
                    log.info("cluster up", extra={"cluster": view.name})
            elif (
                view.idle_minutes
                and stamp - view.last_used_at >= view.idle_minutes * 60
                and not self._ledger.on_nodes(view.node_ids)
            ):
                due.append((view.name, f"autostopped after {view.idle_minutes} idle minutes", view.autostop_down))
        return due

    def _provision_missing(self, view: ClusterView) -> None:
        live = [i for i in view.node_ids if (i in self._provisioning.pending or self._nodes.ready(i))]
        missing = view.num_nodes - len(live)
        while missing > 0:
            if view.attempts >= MAX_ATTEMPTS * view.num_nodes:
                view.state = FAILED
                last = f": {view.reason}" if view.reason else ""
                view.reason = f"no node could be provisioned after {view.attempts} attempts{last}"
                self._save(view)
                log.warning("cluster failed", extra={"cluster": view.name})
                return
            attempt = view.attempts + 1
            # The intent and the cluster's claim on its node commit together: a crash in
            # between must not leave a node in flight that no cluster counts as its own.
            with self._engine.begin() as conn:
                prov, offer, price, why = self._provisioning.provision_for(
                    f"cluster:{view.name}/{attempt}", view.resources, conn
                )
                changes: dict[str, Any] = {"attempts": attempt, "reason": why}
                if prov is not None:
                    changes["node_ids_json"] = json.dumps([*view.node_ids, prov.node_id])
                    if offer is not None and not view.where:
                        changes.update(location=offer.place, hourly_price=price)
                self._write(conn, view, **changes)
            view.attempts, view.reason = attempt, why
            if prov is None:
                return  # nothing available right now (why is shown while INIT); the next reconcile tries again
            self._provisioning.started(prov)
            view.node_ids.append(prov.node_id)
            self._node_cluster[prov.node_id] = view.name
            if offer is not None and not view.where:
                view.where, view.hourly_price = offer.place, price
            missing -= 1

    def _save(self, view: ClusterView) -> None:
        with self._engine.begin() as conn:
            self._write(conn, view)

    @staticmethod
    def _write(conn: Connection, view: ClusterView, **changes: Any) -> None:
        values = {**_row(view), **changes}
        del values["name"]
        conn.execute(update(t.clusters).where(t.clusters.c.name == view.name).values(**values))
