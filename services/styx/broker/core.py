"""Resource broker: the facade that builds the broker's parts and runs allocate rounds.

Parts, each with one job, none importing this module: ``nodes`` (registration, leases),
``placement`` (ledger, best fit), ``waits`` (asks that fit nothing now), ``offers`` and
``catalog_ops`` (catalog, ranking), ``provisioning`` (the outbox, failover), ``clusters``
and ``cluster_ops``. The store is the truth; the in-memory view changes only after its
transaction commits. The lock (``ViewLock``, shared by replicas on PostgreSQL) is never
held across a provisioner call: a round commits intents under it and sends them after,
and a refused intent fails over in the next round of the same call.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import Engine

from styx.broker import tables as t
from styx.broker.attempts import list_attempts
from styx.broker.catalog import Catalog
from styx.broker.catalog_ops import CatalogService
from styx.broker.cluster_ops import ClusterOps
from styx.broker.clusters import CLUSTER_LABEL, Clusters, ClusterView
from styx.broker.model import (
    ARCH_LABEL,
    LOST,
    READY,
    AcceleratorInfo,
    Attempt,
    CatalogInfo,
    NodeView,
    ProvisionerPort,
    _Allocation,
    _FreeIndex,
)
from styx.broker.nodes import NodeRegistry
from styx.broker.offers import OfferBook
from styx.broker.optimizer import Ranking
from styx.broker.placement import Ledger, existing, place, place_gang, placed
from styx.broker.provisioning import Provisioning
from styx.broker.view_lock import ViewLock
from styx.broker.waits import Waits
from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.common.errors import InvalidArgument
from styx.common.faults import crash_point
from styx.common.leases import Lease
from styx.common.migrations import upgrade
from styx.common.offers import Offer
from styx.common.placement import Ask, Placement
from styx.common.resources import IMAGE_LABEL, Capacity, Resources, normalize_arch

log = logging.getLogger(__name__)

# Rounds of one allocate call: each refused intent sends its ask to the next offer.
_MAX_ROUNDS = 8


class Broker:
    """Owns nodes and allocations; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        provisioner: ProvisionerPort | None = None,
        lease_seconds: float = 15.0,
        provision_timeout_s: float = 300.0,
        offers_ttl_s: float = 30.0,
        failed_offer_cooldown_s: float = 60.0,
        catalog: Catalog | None = None,
        clock: Clock = SYSTEM_CLOCK,
        replica_id: str = "",
    ) -> None:
        self._engine = engine
        self._provisioner = provisioner
        self._clock = clock
        self._lock = ViewLock(engine, self._reload)
        upgrade(engine, "broker")
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        # One replica at a time expires leases, polls operations and tends clusters.
        self._reconciler = Lease(engine, t.leases, "reconciler", self.replica_id, 5.0, clock)
        base = catalog or Catalog()
        self._book = OfferBook(provisioner, base, clock, offers_ttl_s)
        self._nodes = NodeRegistry(engine, clock, lease_seconds)
        self._ledger = Ledger(self._nodes.nodes)
        with engine.connect() as conn:
            self._ledger.load(conn)
        self._provisioning = Provisioning(
            engine,
            provisioner,
            self._nodes,
            self._book,
            self._lock,
            clock,
            cooldown_s=failed_offer_cooldown_s,
            timeout_s=provision_timeout_s,
        )
        self.clusters = Clusters(engine, self._nodes, self._ledger, self._book, self._provisioning, clock)
        self._waits = Waits(self._nodes, self._book, self._provisioning, self.clusters)
        self._cluster_ops = ClusterOps(self._lock, self.clusters, self._provisioning, provisioner, self._book)
        self._catalogs = CatalogService(engine, self._lock, self._book, self._provisioning.fleet_view, base, clock)

    def _reload(self) -> None:
        """Read the whole view again (another replica changed the store)."""
        self._nodes.load()
        with self._engine.connect() as conn:
            self._ledger.load(conn)
        self._provisioning.load()
        self.clusters.load()
        self._catalogs.sync()

    # ---- the catalog side (CatalogService) and the attempts log -----------------------------
    @property
    def catalog(self) -> Catalog:
        """The current catalog (built-in offers with imported providers replaced)."""
        return self._catalogs.catalog

    def optimize(self, res: Resources, num_nodes: int = 1, limit: int = 10, include_disabled: bool = False) -> Ranking:
        """Rank offers for ``res`` as a launch would try them, with the reasons for exclusions."""
        return self._catalogs.optimize(res, num_nodes, limit, include_disabled)

    def import_catalog(self, offers: Sequence[Offer], request_id: str = "") -> tuple[int, list[str]]:
        """Replace the catalog of every provider present in ``offers``; returns (count, providers)."""
        return self._catalogs.import_catalog(offers, request_id)

    def list_catalogs(self) -> list[CatalogInfo]:
        """One entry per catalog provider, sorted by name."""
        return self._catalogs.list_catalogs()

    def list_accelerators(self, name: str = "", include_disabled: bool = False) -> list[AcceleratorInfo]:
        """Accelerators with the cheapest offer per provider and count."""
        return self._catalogs.list_accelerators(name, include_disabled)

    def list_attempts(
        self, task_id: str = "", allocation_id: str = "", node_id: str = "", limit: int = 100
    ) -> list[Attempt]:
        """Provisioning attempts, newest first, filtered by task, allocation and node."""
        return list_attempts(self._engine, task_id, allocation_id, node_id, limit)

    @property
    def lease_seconds(self) -> float:
        """A node without heartbeat for this long is LOST."""
        return self._nodes.lease_seconds

    @lease_seconds.setter
    def lease_seconds(self, seconds: float) -> None:
        self._nodes.lease_seconds = seconds

    # ---- nodes -------------------------------------------------------------------------------
    def join_node(self, node_id: str, request_id: str) -> None:
        """Redeem ``node_id``'s join token for ``request_id`` (see ``NodeRegistry.join``)."""
        self._nodes.join(node_id, request_id)

    def register_node(
        self,
        node_id: str,
        provider: str,
        instance_id: str,
        capacity: Capacity,
        region: str = "",
        zone: str = "",
        instance_type: str = "",
        labels: dict[str, str] | None = None,
        address: str = "",
    ) -> NodeView:
        """Add a node or refresh its capacity; idempotent on node_id. A cluster's node gets the
        cluster's label (and a provisioned node its offer's arch) whatever the agent sent."""
        stamp = self._clock.now()
        with self._lock:
            cluster = self.clusters.cluster_of_node(node_id)
            labels = {**(labels or {}), CLUSTER_LABEL: cluster} if cluster else dict(labels or {})
            booting, known = self._provisioning.pending.get(node_id), self._nodes.nodes.get(node_id)
            if booting is not None and booting.offer.arch:
                labels[ARCH_LABEL] = normalize_arch(booting.offer.arch)
            elif known is not None and known.arch:
                labels.setdefault(ARCH_LABEL, known.arch)  # an agent's re-registration keeps it
            # Which image a node runs is the broker's record, never the agent's claim.
            labels.pop(IMAGE_LABEL, None)
            image = booting.image_id if booting is not None else (known.labels.get(IMAGE_LABEL, "") if known else "")
            if image:
                labels[IMAGE_LABEL] = image
            view = NodeView(
                node_id=node_id,
                provider=provider or "local",
                instance_id=instance_id,
                region=region,
                zone=zone,
                instance_type=instance_type,
                total=capacity,
                labels=labels,
                state=READY,
                address=address,
                registered_at=stamp,
                last_heartbeat=stamp,
            )
            with self._engine.begin() as conn:
                self._nodes.stage_register(conn, view)
                self._provisioning.stage_registered(conn, node_id)
            self._nodes.install(view)
            self._provisioning.pending.pop(node_id, None)
            return view

    def heartbeat(self, node_id: str) -> bool:
        """Renew a node's lease; False when the node is unknown (it must register)."""
        with self._lock.reading():
            node = self._nodes.nodes.get(node_id)
            if node is None or node.state != LOST:
                return self._nodes.heartbeat(node_id)  # a stored timestamp, not a change of the view
        with self._lock:
            return self._nodes.heartbeat(node_id)

    def deregister_node(self, node_id: str, reason: str, instance_lost: bool = False) -> NodeView:
        """Mark a node gone now, so its work is re-queued without waiting for the lease.

        ``instance_lost``: its instance vanished. For a spot node that is a reclaim, so its
        spot offer cools down like a capacity error and the relaunch goes elsewhere; the
        attempt is marked "lost" (`sky status -v`).
        """
        with self._lock:
            node = self._nodes.get(node_id)
            cool = None
            with self._engine.begin() as conn:
                changed = self._nodes.mark_gone(conn, node_id)
                if changed and instance_lost:
                    cool = self._provisioning.stage_lost(conn, node_id, reason)
            if changed:
                self._nodes.set_state(node_id, "GONE")
                log.info("node deregistered", extra={"node_id": node_id, "reason": reason})
            if cool is not None:
                self._provisioning.cool(*cool)
            return node

    def get_node(self, node_id: str) -> NodeView:
        """One node; NotFound when unknown."""
        with self._lock.reading():
            return self._nodes.get(node_id)

    def list_nodes(self, include_lost: bool = False) -> list[NodeView]:
        """Nodes, oldest registration first."""
        with self._lock.reading():
            return self._nodes.listed(include_lost)

    def node_counts(self) -> dict[tuple[str, ...], float]:
        """(provider, state) -> number of nodes (for metrics)."""
        with self._lock.reading():
            return self._nodes.counts()

    def allocation_count(self) -> int:
        """Number of live allocations (for metrics)."""
        with self._lock.reading():
            return len(self._ledger.allocations)

    # ---- placement ---------------------------------------------------------------------------
    def allocate(self, asks: Sequence[Ask]) -> list[Placement]:
        """Place a batch of asks in order; idempotent per allocation_id."""
        if len(asks) > 10000:
            raise InvalidArgument(f"requests: at most 10000 per call, got {len(asks)}")
        results: list[Placement] = []
        for _ in range(_MAX_ROUNDS):
            self._book.refresh()
            with self._lock:
                before = set(self._provisioning.pending)
                results = self._allocate_round(asks)
                started = set(self._provisioning.pending) - before
            if not started or not self._provisioning.drain(started):
                break
        return results

    def _allocate_round(self, asks: Sequence[Ask]) -> list[Placement]:
        pending_free = {
            p.node_id: Capacity(p.offer.cpus, p.offer.memory_gib) for p in self._provisioning.pending.values()
        }
        new_allocs: list[_Allocation] = []
        self._book.batch(True)
        try:
            results = self._place_all(asks, pending_free, new_allocs)
        finally:
            self._book.batch(False)
        if new_allocs:
            try:
                with self._engine.begin() as conn:
                    self._ledger.write(conn, new_allocs, self._clock.now())
            except BaseException:
                # The view may not run ahead of the store: nothing of this batch was placed.
                for alloc in new_allocs:
                    self._ledger.undo(alloc)
                raise
        for alloc in new_allocs:
            self.clusters.touch(alloc.node_id)
        return results

    def _place_all(
        self, asks: Sequence[Ask], pending_free: dict[str, Capacity], new_allocs: list[_Allocation]
    ) -> list[Placement]:
        results = []
        nodes = self._nodes.nodes
        index = _FreeIndex(nodes.values())
        # Free capacity only shrinks within a batch, so an answer of "no room for R" is reused
        # for later asks for R until a provision starts (a booting node could absorb them);
        # gangs are keyed with their size (N nodes not fitting says nothing about fewer).
        unplaceable: dict[tuple[Resources, int], Placement] = {}
        for ask in asks:
            gang = ask.num_nodes > 1
            done = self._ledger.allocations.get(ask.allocation_id)
            if done is not None:
                results.append(existing(ask, done, self._ledger, nodes))
                continue
            known = unplaceable.get((ask.resources, ask.num_nodes))
            if known is not None:
                results.append(replace(known, allocation_id=ask.allocation_id))
                continue
            allocs = place_gang(ask, index) if gang else [a for a in [place(ask, index)] if a]
            if allocs:
                for alloc in allocs:
                    self._ledger.apply(alloc)
                    index.update(nodes[alloc.node_id])
                    new_allocs.append(alloc)
                results.append(placed(ask, allocs, nodes))
                continue
            booting = len(pending_free)
            answer = self._waits.gang(ask, pending_free, index) if gang else self._waits.single(ask, pending_free)
            results.append(answer)
            if len(pending_free) != booting:
                unplaceable.clear()  # a new node is on its way: earlier answers may be stale
            elif not answer.reason.startswith("waiting for node "):
                unplaceable[(ask.resources, ask.num_nodes)] = answer  # absorbed asks change pending capacity
        return results

    def release(self, allocation_id: str) -> bool:
        """Free an allocation; False when it was unknown or already free."""
        return self.release_many([allocation_id]) == 1

    def release_many(self, allocation_ids: Sequence[str]) -> int:
        """Free allocations in one transaction; returns how many were live (unknown ones are skipped)."""
        if len(allocation_ids) > 10000:
            raise InvalidArgument(f"allocation_ids: at most 10000 per call, got {len(allocation_ids)}")
        with self._lock:
            live = self._ledger.allocations
            allocs = [live[i] for i in dict.fromkeys(allocation_ids) if i in live]
            if not allocs:
                return 0
            with self._engine.begin() as conn:
                self._ledger.write_release(conn, [a.allocation_id for a in allocs])
            for alloc in allocs:
                self._ledger.undo(alloc)
            for node_id in {a.node_id for a in allocs}:
                self.clusters.touch(node_id)
            return len(allocs)

    # ---- clusters (ClusterOps) ------------------------------------------------------------------
    def create_cluster(
        self, name: str, resources: Resources, num_nodes: int, idle_minutes: int = 0, autostop_down: bool = False
    ) -> ClusterView:
        """Create a cluster (or reuse a live one) and provision its nodes."""
        return self._cluster_ops.create(name, resources, num_nodes, idle_minutes, autostop_down)

    def get_cluster(self, name: str) -> ClusterView:
        """One cluster; NotFound when unknown."""
        return self._cluster_ops.get(name)

    def list_clusters(self, include_down: bool = False) -> list[ClusterView]:
        """Clusters, newest first."""
        return self._cluster_ops.list(include_down)

    def set_autostop(self, name: str, idle_minutes: int, down: bool) -> ClusterView:
        """Set (or clear with 0) a cluster's autostop."""
        return self._cluster_ops.set_autostop(name, idle_minutes, down)

    def down_cluster(self, name: str, reason: str = "torn down by user") -> ClusterView:
        """Tear a cluster down: its nodes go, their instances are terminated; idempotent."""
        return self._cluster_ops.down(name, reason)

    def stop_cluster(self, name: str, reason: str = "stopped by user") -> ClusterView:
        """Stop a cluster's instances; FailedPrecondition, with nothing changed, when its provider cannot."""
        return self._cluster_ops.stop(name, reason)

    def start_cluster(self, name: str) -> ClusterView:
        """Start a stopped cluster's instances; it is UP once its agents re-register."""
        return self._cluster_ops.start(name)

    def stop(self) -> None:
        """Hand the reconciler lease back, so another replica (or a restart) takes over at once."""
        self._reconciler.release()

    # ---- reconciliation -------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Send the outbox, expire leases, settle provisions in flight, then tend the clusters.

        Only the replica holding the "reconciler" lease does (any replica may be asked).
        """
        if not self._reconciler.hold():
            return
        self._book.refresh()
        self._provisioning.drain()
        with self._lock:
            self._nodes.expire_leases()
        crash_point("broker.reconcile")
        self._provisioning.poll()
        with self._lock:
            due = self.clusters.reconcile()
        for name, why, down in due:
            self._cluster_ops.autostop(name, why, down)
        self._provisioning.drain()
