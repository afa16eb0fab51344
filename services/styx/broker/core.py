"""Resource broker logic: nodes, capacity, best-fit placement and provisioning requests.

The store is the truth; an in-memory view of nodes and allocations (rebuilt from the store
at start) keeps placement fast. Placement is best fit: among READY nodes that satisfy the
request, take the one left with the least free CPU (then memory), so big nodes stay free for
big tasks. When nothing fits, the broker ranks offers with the optimizer (catalog offers of
enabled providers plus the provisioner's host offers, cheapest first): none could ever fit
-> INFEASIBLE with the reasons; otherwise it waits for busy capacity or asks the provisioner
for a node from the top of the ranked list.

Failover: a failed attempt cools down a scope for ``failed_offer_cooldown_s`` according to
the provider's error class (capacity: that offer in that zone; quota: the provider's
region; auth: the provider), and the next allocate round provisions the next ranked offer
outside every cooling scope, so the walk goes zone -> region -> provider. Every attempt is
a row of ``broker_provisions`` (``list_attempts``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from styx.broker import catalog_store
from styx.broker import tables as t
from styx.broker.catalog import Catalog
from styx.broker.catalog_ops import CatalogMixin
from styx.broker.model import (
    _EPS,
    _FAILOVER_DEPTH,
    ABSENT,
    GONE,
    LOST,
    READY,
    NodeView,
    ProvisionerPort,
    _Allocation,
    _FreeIndex,
    _in_infra,
    _kind_of,
    _offer_key,
    _Provision,
    _scope_key,
    _scope_keys,
    _spot_key,
    describe,
    offer_fits,
)
from styx.broker.optimizer import Ranking, alternatives, describe_request, rank
from styx.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    StyxError,
    Unavailable,
)
from styx.common.ids import new_id
from styx.common.migrations import upgrade
from styx.common.offers import Offer
from styx.common.placement import INFEASIBLE, PLACED, WAITING, Ask, NodeSlot, Placement, rank_allocation_id
from styx.common.resources import Capacity, GpuDevice, Resources, gpu_matches, infra_parts
from styx.common.store import bulk_insert
from styx.common.timeutil import now

log = logging.getLogger(__name__)


class Broker(CatalogMixin):
    """Owns nodes and allocations; thread-safe (one lock guards the in-memory view)."""

    def __init__(
        self,
        engine: Engine,
        provisioner: ProvisionerPort | None = None,
        lease_seconds: float = 15.0,
        provision_timeout_s: float = 300.0,
        offers_ttl_s: float = 30.0,
        failed_offer_cooldown_s: float = 60.0,
        catalog: Catalog | None = None,
    ) -> None:
        self._engine = engine
        self._provisioner = provisioner
        self.lease_seconds = lease_seconds
        self._provision_timeout_s = provision_timeout_s
        self._offers_ttl_s = offers_ttl_s
        self._cooldown_s = failed_offer_cooldown_s
        self._lock = threading.RLock()
        self._nodes: dict[str, NodeView] = {}
        self._allocations: dict[str, _Allocation] = {}
        self._provisions: dict[str, _Provision] = {}
        self._offers: list[Offer] = []
        self._offers_at = 0.0
        self._offers_known = False
        self._providers: dict[str, str] | None = None
        self._providers_at = 0.0
        self._failed_offers: dict[tuple[str, ...], tuple[float, str]] = {}
        self._rank_memo: dict[tuple[Resources, int], Ranking] | None = None
        upgrade(engine, "broker")
        self._base_catalog = catalog or Catalog()
        self._imported, self._imports = catalog_store.load_imported(engine)
        self._catalog = self._base_catalog.merged(self._imported) if self._imported else self._base_catalog
        self._load()
        from styx.broker.clusters import Clusters

        self.clusters = Clusters(engine, self)

    # ---- state loading -------------------------------------------------------------
    def _load(self) -> None:
        with self._engine.connect() as conn:
            for row in conn.execute(select(t.nodes)):
                self._nodes[row.node_id] = NodeView(
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
                    # A restarted broker gives every node a fresh lease instead of expiring all.
                    last_heartbeat=now(),
                )
            for row in conn.execute(select(t.allocations).where(t.allocations.c.released.is_(False))):
                self._remember(
                    _Allocation(
                        row.allocation_id,
                        row.task_id,
                        row.node_id,
                        row.cpus,
                        row.memory_gib,
                        tuple(json.loads(row.gpu_indices_json)),
                    )
                )
            for row in conn.execute(select(t.provisions).where(t.provisions.c.state == "pending")):
                self._provisions[row.node_id] = _Provision(
                    row.node_id, row.operation_id, Offer(**json.loads(row.offer_json)), row.spot, row.created_at
                )

    def _remember(self, alloc: _Allocation) -> None:
        self._allocations[alloc.allocation_id] = alloc
        node = self._nodes.get(alloc.node_id)
        if node is not None:
            node.used_cpus += alloc.cpus
            node.used_memory_gib += alloc.memory_gib
            node.used_gpus.update(alloc.gpu_indices)

    # ---- nodes -----------------------------------------------------------------------
    def join_node(self, node_id: str, request_id: str) -> None:
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
                conn.execute(insert(t.node_joins).values(node_id=node_id, request_id=request_id, joined_at=now()))
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
        """Add a node or refresh its capacity; idempotent on node_id.

        A node provisioned for a named cluster gets the cluster's label here, whatever the
        agent sent, so only that cluster's tasks land on it.
        """
        if not node_id:
            raise InvalidArgument("node_id: required")
        if capacity.cpus <= 0:
            raise InvalidArgument(f"capacity.cpus: must be greater than 0, got {capacity.cpus}")
        if capacity.memory_gib < 0:
            raise InvalidArgument("capacity.memory_gib: must not be negative")
        cluster = self.clusters.cluster_of_node(node_id) if hasattr(self, "clusters") else ""
        if cluster:
            from styx.broker.clusters import CLUSTER_LABEL

            labels = {**(labels or {}), CLUSTER_LABEL: cluster}
        stamp = now()
        with self._lock:
            existing = self._nodes.get(node_id)
            row = {
                "provider": provider or "local",
                "instance_id": instance_id,
                "region": region,
                "zone": zone,
                "instance_type": instance_type,
                "cpus": capacity.cpus,
                "memory_gib": capacity.memory_gib,
                "gpus_json": json.dumps([asdict(g) for g in capacity.gpus]),
                "labels_json": json.dumps(labels or {}),
                "state": READY,
                "last_heartbeat": stamp,
                "address": address,
            }
            with self._engine.begin() as conn:
                if existing is None:
                    conn.execute(insert(t.nodes).values(node_id=node_id, registered_at=stamp, **row))
                else:
                    conn.execute(update(t.nodes).where(t.nodes.c.node_id == node_id).values(**row))
                if node_id in self._provisions:
                    conn.execute(
                        update(t.provisions)
                        .where(t.provisions.c.node_id == node_id)
                        .values(state="registered", updated_at=stamp)
                    )
            self._provisions.pop(node_id, None)
            node = NodeView(
                node_id=node_id,
                provider=row["provider"],
                instance_id=instance_id,
                region=region,
                zone=zone,
                instance_type=instance_type,
                total=capacity,
                labels=labels or {},
                state=READY,
                address=address,
                registered_at=existing.registered_at if existing else stamp,
                last_heartbeat=stamp,
            )
            if existing is not None:
                node.used_cpus, node.used_memory_gib = existing.used_cpus, existing.used_memory_gib
                node.used_gpus = existing.used_gpus
            self._nodes[node_id] = node
            log.info("node registered", extra={"node_id": node_id, "cpus": capacity.cpus, "gpus": len(capacity.gpus)})
            return node

    def heartbeat(self, node_id: str) -> bool:
        """Renew a node's lease; False when the node is unknown (it must register)."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None:
                return False
            if node.state == GONE:
                return False
            node.last_heartbeat = now()
            if node.state == LOST:
                node.state = READY
                with self._engine.begin() as conn:
                    conn.execute(update(t.nodes).where(t.nodes.c.node_id == node_id).values(state=READY))
            return True

    def node_counts(self) -> dict[tuple[str, ...], float]:
        """(provider, state) -> number of nodes (for metrics)."""
        with self._lock:
            out: dict[tuple[str, ...], float] = {}
            for n in self._nodes.values():
                out[(n.provider, n.state)] = out.get((n.provider, n.state), 0) + 1
            return out

    def allocation_count(self) -> int:
        """Number of live allocations (for metrics)."""
        with self._lock:
            return len(self._allocations)

    def locked(self) -> threading.RLock:
        """The broker's lock, for callers (servicers) that work with its cluster registry."""
        return self._lock

    def deregister_node(self, node_id: str, reason: str, instance_lost: bool = False) -> NodeView:
        """Mark a node gone now, so its work is re-queued without waiting for the lease.

        ``instance_lost``: its instance vanished behind Styx's back. For a spot node that is
        almost always a reclaim, i.e. the zone ran short of spot capacity, so that spot
        offer cools down like a capacity error and the relaunch goes to the next zone,
        region or provider; the attempt is marked "lost" so `sky status -v` shows it.
        """
        with self._lock:
            node = self.get_node(node_id)
            if node.state != GONE:
                node.state = GONE
                with self._engine.begin() as conn:
                    conn.execute(update(t.nodes).where(t.nodes.c.node_id == node_id).values(state=GONE))
                    if instance_lost:
                        self._record_lost_instance(conn, node_id, reason)
                log.info("node deregistered", extra={"node_id": node_id, "reason": reason})
            return node

    def _record_lost_instance(self, conn: Any, node_id: str, reason: str) -> None:
        row = conn.execute(
            select(t.provisions.c.offer_json, t.provisions.c.spot).where(t.provisions.c.node_id == node_id)
        ).first()
        if row is None:
            return  # a hand-started node: no offer to cool
        stamp = now()
        error = f"{'spot instance reclaimed' if row.spot else 'instance lost'}: {reason}"
        conn.execute(
            update(t.provisions)
            .where(t.provisions.c.node_id == node_id)
            .values(state="lost", error=error, error_kind="capacity" if row.spot else "", updated_at=stamp)
        )
        if row.spot:
            offer = Offer(**json.loads(row.offer_json))
            self._failed_offers[_spot_key(offer)] = (stamp + self._cooldown_s, error)
            log.warning("spot capacity lost; cooling the offer", extra={"node_id": node_id, "place": offer.place})

    def get_node(self, node_id: str) -> NodeView:
        """One node; NotFound when unknown."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None:
                raise NotFound(f"node {node_id!r} not found; `sky status --nodes` lists nodes")
            return node

    def list_nodes(self, include_lost: bool = False) -> list[NodeView]:
        """Nodes, oldest registration first."""
        with self._lock:
            nodes = [n for n in self._nodes.values() if include_lost or n.state not in ABSENT]
        return sorted(nodes, key=lambda n: (n.registered_at, n.node_id))

    # ---- placement ---------------------------------------------------------------------
    def allocate(self, asks: Sequence[Ask]) -> list[Placement]:
        """Place a batch of asks in order; idempotent per allocation_id."""
        if len(asks) > 10000:
            raise InvalidArgument(f"requests: at most 10000 per call, got {len(asks)}")
        with self._lock:
            pending_free = {p.node_id: Capacity(p.offer.cpus, p.offer.memory_gib) for p in self._provisions.values()}
            new_allocs: list[_Allocation] = []
            self._rank_memo = {}
            try:
                results = self._allocate_locked(asks, pending_free, new_allocs)
            finally:
                self._rank_memo = None
            if new_allocs:
                stamp = now()
                with self._engine.begin() as conn:
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
                            for a in new_allocs
                        ],
                    )
            return results

    def _allocate_locked(
        self, asks: Sequence[Ask], pending_free: dict[str, Capacity], new_allocs: list[_Allocation]
    ) -> list[Placement]:
        results = []
        index = _FreeIndex(self._nodes.values())
        # Within a batch free capacity only shrinks, so once resources R found no room, every
        # later ask for R finds none either. Its answer is reused until a provision starts
        # (a booting node could absorb the next R). Deep queues of identical tasks then cost
        # one dictionary lookup per ask instead of a full search.
        # Gangs are keyed with their size: N nodes not fitting says nothing about fewer.
        unplaceable: dict[tuple[Resources, int], Placement] = {}
        for ask in asks:
            gang = ask.num_nodes > 1
            done = self._allocations.get(ask.allocation_id)
            if done is not None:
                results.append(
                    self._existing(ask, done)
                    if gang
                    else Placement(ask.allocation_id, PLACED, done.node_id, done.gpu_indices)
                )
                continue
            known = unplaceable.get((ask.resources, ask.num_nodes))
            if known is not None:
                results.append(replace(known, allocation_id=ask.allocation_id))
                continue
            allocs = self._place_gang(ask, index) if gang else [a for a in [self._place(ask, index)] if a]
            if allocs:
                for alloc in allocs:
                    self._remember(alloc)
                    index.update(self._nodes[alloc.node_id])
                    self.clusters.touch(alloc.node_id)
                    new_allocs.append(alloc)
                results.append(self._placed(ask, allocs))
                continue
            booting = len(pending_free)
            answer = self._no_fit_gang(ask, pending_free, index) if gang else self._no_fit(ask, pending_free)
            results.append(answer)
            if len(pending_free) != booting:
                unplaceable.clear()  # a new node is on its way: earlier answers may be stale
            elif not answer.reason.startswith("waiting for node "):
                unplaceable[(ask.resources, ask.num_nodes)] = answer  # absorbed asks change pending capacity
        return results

    def _placed(self, ask: Ask, allocs: Sequence[_Allocation]) -> Placement:
        first = allocs[0]
        if ask.num_nodes <= 1:
            return Placement(ask.allocation_id, PLACED, first.node_id, first.gpu_indices)
        slots = tuple(NodeSlot(a.node_id, a.gpu_indices, self._nodes[a.node_id].address) for a in allocs)
        return Placement(ask.allocation_id, PLACED, first.node_id, first.gpu_indices, nodes=slots)

    def _existing(self, ask: Ask, first: _Allocation) -> Placement:
        """A repeated gang ask: answer with the ranks stored the first time."""
        allocs = [first]
        for r in range(1, ask.num_nodes):
            alloc = self._allocations.get(rank_allocation_id(ask.allocation_id, r))
            if alloc is not None:
                allocs.append(alloc)
        slots = tuple(
            NodeSlot(a.node_id, a.gpu_indices, n.address if (n := self._nodes.get(a.node_id)) else "") for a in allocs
        )
        return Placement(ask.allocation_id, PLACED, first.node_id, first.gpu_indices, nodes=slots)

    def _place_gang(self, ask: Ask, index: _FreeIndex) -> list[_Allocation]:
        """All ranks of a gang on distinct nodes (best fit each), or [] when they do not all fit."""
        _, alts = alternatives(ask.resources)
        for res in alts:
            found = []
            for node, gpus in self._fitting(res, index):
                found.append(
                    _Allocation(
                        rank_allocation_id(ask.allocation_id, len(found)),
                        ask.task_id,
                        node.node_id,
                        res.cpus,
                        res.memory_gib,
                        gpus,
                    )
                )
                if len(found) == ask.num_nodes:
                    return found
        return []

    def _place(self, ask: Ask, index: _FreeIndex) -> _Allocation | None:
        _, alts = alternatives(ask.resources)
        for res in alts:
            alloc = self._place_one(ask, res, index)
            if alloc is not None:
                return alloc
        return None

    @classmethod
    def _place_one(cls, ask: Ask, res: Resources, index: _FreeIndex) -> _Allocation | None:
        # Nodes come in best-fit order (least free CPU, then memory, then id), so the first
        # node that satisfies everything is the best fit.
        for node, gpus in cls._fitting(res, index):
            return _Allocation(ask.allocation_id, ask.task_id, node.node_id, res.cpus, res.memory_gib, gpus)
        return None

    @staticmethod
    def _fitting(res: Resources, index: _FreeIndex) -> Iterator[tuple[NodeView, tuple[int, ...]]]:
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

    def _no_fit(self, ask: Ask, pending_free: dict[str, Capacity]) -> Placement:
        if ask.resources.cluster:
            return self.clusters.no_fit(ask)  # clusters have their nodes; never provision here
        _, alts = alternatives(ask.resources)
        # A node still being provisioned whose offer fits absorbs the ask.
        for res in alts:
            for node_id, free in pending_free.items():
                prov = self._provisions[node_id]
                if (
                    offer_fits(prov.offer, res)
                    and free.cpus + _EPS >= res.cpus
                    and free.memory_gib + _EPS >= res.memory_gib
                ):
                    free.cpus -= res.cpus
                    free.memory_gib -= res.memory_gib
                    return Placement(
                        ask.allocation_id, WAITING, reason=f"waiting for node {node_id} ({prov.offer.place}) to boot"
                    )
        pool = [n for n in self._nodes.values() if n.state == READY and not n.cluster]
        busy_fit = any(self._node_could_fit(n, res) for n in pool for res in alts)
        if self._provisioner is None:
            if busy_fit:
                return Placement(ask.allocation_id, WAITING, reason="waiting for capacity on busy nodes")
            return Placement(
                ask.allocation_id, INFEASIBLE, reason=f"no node can hold {describe(ask.resources)} and no provisioner"
            )
        offers = self._current_offers()
        enabled = self._enabled_providers()
        if not self._offers_known:
            return Placement(ask.allocation_id, WAITING, reason="provisioner unavailable; will retry")
        ranking = self._ranked(ask.resources, offers, enabled)
        if not ranking.offers and not busy_fit:
            return Placement(ask.allocation_id, INFEASIBLE, reason=self._infeasible_reason(ask.resources, offers))
        started, cooling = self._provision_ranked(ask, ranking)
        if started is not None:
            node_id, ranked = started
            if not node_id:
                return Placement(ask.allocation_id, WAITING, reason="provisioner unavailable; will retry")
            alt, offer = alts[ranked.alternative], ranked.offer
            pending_free[node_id] = Capacity(offer.cpus - alt.cpus, offer.memory_gib - alt.memory_gib)
            return Placement(ask.allocation_id, WAITING, reason=f"provisioning node {node_id} ({offer.place})")
        if busy_fit:
            return Placement(ask.allocation_id, WAITING, reason="waiting for capacity on busy nodes")
        if cooling:
            return Placement(ask.allocation_id, WAITING, reason="recent provisioning failures: " + "; ".join(cooling))
        return Placement(ask.allocation_id, WAITING, reason="every feasible offer is at its instance limit")

    def _no_fit_gang(self, ask: Ask, pending_free: dict[str, Capacity], index: _FreeIndex) -> Placement:
        """Answer for a gang whose ranks do not all fit now: nothing is reserved.

        INFEASIBLE when no cluster, node set or offer could ever give ``num_nodes`` nodes at
        once; else the nodes that are missing (beyond the free nodes that fit and the booting
        nodes that can take a rank) are provisioned through the ranked offers, and it WAITS.
        """
        if ask.resources.cluster:
            return self.clusters.no_fit(ask)  # clusters have their nodes; never provision here
        n, res_all = ask.num_nodes, ask.resources
        _, alts = alternatives(res_all)
        fitting = max(sum(1 for _ in self._fitting(res, index)) for res in alts)
        pool = [nd for nd in self._nodes.values() if nd.state == READY and not nd.cluster]
        could = [nd for nd in pool if any(self._node_could_fit(nd, res) for res in alts)]
        what = f"{n} nodes of {describe(res_all)} at once"
        ranking: Ranking | None = None
        if self._provisioner is None:
            if len(could) < n:
                why = f"{what}: only {len(could)} node(s) could hold it, no provisioner"
                return Placement(ask.allocation_id, INFEASIBLE, reason=why)
        else:
            offers = self._current_offers()
            enabled = self._enabled_providers()
            if not self._offers_known:
                return Placement(ask.allocation_id, WAITING, reason="provisioner unavailable; will retry")
            ranking = self._ranked(res_all, offers, enabled, n)
            if not ranking.offers and not could:
                return Placement(ask.allocation_id, INFEASIBLE, reason=self._infeasible_reason(res_all, offers))
            limit = self._most_nodes(ranking, could)
            if limit < n:
                caps = (
                    ", ".join(sorted({f"{r.offer.place} at most {r.offer.max_instances}" for r in ranking.offers}))
                    or "no offer"
                )
                return Placement(
                    ask.allocation_id,
                    INFEASIBLE,
                    reason=f"{what}: at most {limit} such node(s) can exist ({caps}; {len(could)} live); "
                    "for local nodes raise STYX_LOCAL_MAX_NODES",
                )
        # Booting nodes whose offer fits take one rank each.
        absorbed: list[str] = []
        for node_id, free in pending_free.items():
            if fitting + len(absorbed) >= n:
                break
            prov = self._provisions[node_id]
            for res in alts:
                if (
                    offer_fits(prov.offer, res)
                    and free.cpus + _EPS >= res.cpus
                    and free.memory_gib + _EPS >= res.memory_gib
                ):
                    free.cpus -= res.cpus
                    free.memory_gib -= res.memory_gib
                    absorbed.append(node_id)
                    break
        missing = n - fitting - len(absorbed)
        if missing <= 0:
            return Placement(
                ask.allocation_id, WAITING, reason=f"waiting for node {', '.join(absorbed)} to boot ({what})"
            )
        started: list[str] = []
        cooling: list[str] = []
        while ranking is not None and len(started) < missing:
            got, cooling = self._provision_ranked(ask, ranking)
            if got is None or not got[0]:
                break
            node_id, ranked = got
            alt, offer = alts[ranked.alternative], ranked.offer
            pending_free[node_id] = Capacity(offer.cpus - alt.cpus, offer.memory_gib - alt.memory_gib)
            started.append(node_id)
        if started:
            return Placement(ask.allocation_id, WAITING, reason=f"provisioning node(s) {', '.join(started)} for {what}")
        if len(could) >= n:
            return Placement(ask.allocation_id, WAITING, reason=f"waiting for capacity on busy nodes ({what})")
        if cooling:
            return Placement(ask.allocation_id, WAITING, reason="recent provisioning failures: " + "; ".join(cooling))
        return Placement(ask.allocation_id, WAITING, reason=f"waiting for {missing} more node(s) ({what})")

    def _most_nodes(self, ranking: Ranking, could: list[NodeView]) -> float:
        """How many nodes could ever hold the request at once: the live ones that could plus
        what every ranked offer may still create (unbounded when an offer has no limit)."""
        caps: dict[tuple[str, str, str, str], int] = {}
        for ranked in ranking.offers:
            if not ranked.offer.max_instances:
                return float("inf")
            caps[_offer_key(ranked.offer)] = ranked.offer.max_instances
        # Live nodes of a capped offer are counted within its cap, hand-started ones on top.
        extra = sum(1 for nd in could if (nd.provider, nd.region, nd.zone, nd.instance_type) not in caps)
        return sum(caps.values()) + extra

    def _provision_ranked(self, ask: Ask, ranking: Ranking) -> tuple[tuple[str, Any] | None, list[str]]:
        """Provision the first ranked offer that is not cooling down or at its limit.

        Returns ((node_id, ranked offer) or None, why offers were skipped); node_id is ""
        when the provisioner could not be reached.
        """
        cooling: list[str] = []
        stamp = now()
        for ranked in ranking.offers:
            offer = ranked.offer
            keys = (*_scope_keys(offer), _spot_key(offer)) if ranked.spot else _scope_keys(offer)
            cooldown = next((c for c in (self._failed_offers.get(k) for k in keys) if c and c[0] > stamp), None)
            if cooldown:
                cooling.append(f"{offer.place}: {cooldown[1]}")
                continue
            if offer.max_instances and self._instances_of(offer) >= offer.max_instances:
                continue
            try:
                node_id = self._start_provision(ask, offer, ranked.spot, ranked.hourly_price)
            except StyxError as exc:
                # Refused (disabled provider, bad offer, quota): recorded; try the next one.
                cooling.append(f"{offer.place}: {exc.message}")
                continue
            return (node_id or "", ranked), cooling
        return None, cooling

    # ---- what clusters need from the broker ------------------------------------------------
    def provision_for(self, allocation_id: str, res: Resources) -> tuple[str | None, Offer | None, float, str]:
        """Provision one node for ``res`` (a cluster's).

        Returns (node id, offer, $/h, "") or (None, None, 0, why nothing was started).
        """
        if self._provisioner is None:
            return None, None, 0.0, "no provisioner"
        offers, enabled = self._current_offers(), self._enabled_providers()
        if not self._offers_known:
            return None, None, 0.0, "provisioner unavailable"
        pool = replace(res, cluster="")  # rank like any request; the cluster is this node's destiny
        ranking = self._ranked(pool, offers, enabled)
        started, skipped = self._provision_ranked(Ask(allocation_id, "", pool), ranking)
        if started is None or not started[0]:
            why = "; ".join(skipped) or "every feasible offer is at its instance limit (e.g. STYX_LOCAL_MAX_NODES)"
            return None, None, 0.0, why
        return started[0], started[1].offer, started[1].hourly_price, ""

    def infeasible_reason(self, res: Resources) -> str:
        """Why no enabled offer could ever hold ``res`` ("" when some could)."""
        if self._provisioner is None:
            return ""
        offers, enabled = self._current_offers(), self._enabled_providers()
        if not self._offers_known:
            return ""
        pool = replace(res, cluster="")
        if self._ranked(pool, offers, enabled).offers:
            return ""
        return self._infeasible_reason(pool, offers)

    def node_or_none(self, node_id: str) -> NodeView | None:
        """A node, or None when unknown."""
        return self._nodes.get(node_id)

    def node_ready(self, node_id: str) -> bool:
        """Whether the node registered and is READY."""
        node = self._nodes.get(node_id)
        return node is not None and node.state == READY

    def node_pending_or_ready(self, node_id: str) -> bool:
        """Whether the node is READY or still being provisioned."""
        return node_id in self._provisions or self.node_ready(node_id)

    def node_could_fit(self, node: NodeView, res: Resources) -> bool:
        """Whether the node's total capacity could ever hold ``res``."""
        return self._node_could_fit(node, replace(res, cluster=""))

    def has_allocations(self, node_ids: list[str]) -> bool:
        """Whether any of these nodes holds a live allocation."""
        wanted = set(node_ids)
        return any(a.node_id in wanted for a in self._allocations.values())

    def forget_node(self, node_id: str, reason: str) -> None:
        """Mark a node gone (its tasks re-queue) if the broker knows it."""
        if node_id in self._nodes:
            self.deregister_node(node_id, reason)
        self._provisions.pop(node_id, None)

    def power_node(self, node_id: str, action: str) -> None:
        """Stop or start a node's instance ("stop" | "start") through the provisioner."""
        if self._provisioner is None:
            raise FailedPrecondition("no provisioner: nodes cannot be stopped or started")
        getattr(self._provisioner, action)(node_id)

    def terminate_node(self, node_id: str) -> None:
        """Ask the provisioner to terminate the node's instance."""
        if self._provisioner is not None:
            self._provisioner.terminate(node_id)

    def _ranked(
        self, res: Resources, offers: list[Offer], enabled: dict[str, str] | None, num_nodes: int = 1
    ) -> Ranking:
        # Memoized per batch (see allocate): asks of one batch often share their resources.
        memo = self._rank_memo
        found = memo.get((res, num_nodes)) if memo is not None else None
        if found is None:
            found = rank(
                self._catalog,
                res,
                num_nodes=num_nodes,
                enabled=enabled,
                host_offers=offers,
                limit=_FAILOVER_DEPTH,
                explain=False,
            )
            if memo is not None:
                memo[(res, num_nodes)] = found
        return found

    @staticmethod
    def _node_could_fit(node: NodeView, res: Resources) -> bool:
        if not _in_infra(res, node.provider, node.region, node.zone):
            return False
        if res.instance_type and res.instance_type != node.instance_type:
            return False
        if node.total.cpus + _EPS < res.cpus or node.total.memory_gib + _EPS < res.memory_gib:
            return False
        return not res.accelerators or any(
            sum(1 for g in node.total.gpus if gpu_matches(g.name, a.name)) >= a.count for a in res.accelerators
        )

    def _instances_of(self, offer: Offer) -> int:
        key = _offer_key(offer)
        live = sum(
            1
            for n in self._nodes.values()
            if n.state not in ABSENT and (n.provider, n.region, n.zone, n.instance_type) == key
        )
        return live + sum(1 for p in self._provisions.values() if _offer_key(p.offer) == key)

    def _infeasible_reason(self, res: Resources, offers: Iterable[Offer]) -> str:
        host = [o for o in offers if o.provider not in self._catalog.providers]
        enabled = self._enabled_providers()
        _, alts = alternatives(res)
        in_infra = [
            p
            for p in self._catalog.providers
            for a in alts
            if not infra_parts(a.infra)[0] or infra_parts(a.infra)[0] == p
        ]
        if not in_infra and not any(_in_infra(a, o.provider, o.region, o.zone) for a in alts for o in host):
            where = f" in {res.infra}" if res.infra else ""
            return f"no enabled provider offers capacity{where}; `sky check` shows providers"
        ranking = rank(self._catalog, res, enabled=enabled, host_offers=host, limit=1, explain=True)
        # Host offers read "local/local host has 4 CPUs, ..."; catalog families "aws p4d: 8x A100, ...".
        # Machines that exist (host offers) first: on a local plane they are what matters.
        ordered = sorted(ranking.rejections, key=lambda r: not r.reason.startswith("has "))
        shown = "; ".join(
            f"{r.family} {r.reason}" if r.reason.startswith("has ") else f"{r.family}: {r.reason}" for r in ordered[:6]
        )
        more = len(ranking.rejections) - 6
        tail = f" (+{more} more; `sky launch --dryrun` lists them)" if more > 0 else ""
        return f"no enabled provider can satisfy {describe(res)} ({describe_request(res)}): {shown}{tail}"

    def _current_offers(self) -> list[Offer]:
        if self._provisioner is None:
            return []
        stamp = now()
        if not self._offers_known or stamp - self._offers_at > self._offers_ttl_s:
            try:
                self._offers = self._provisioner.list_offers()
                self._offers_at = stamp
                self._offers_known = True
            except Exception as exc:
                log.warning("cannot list offers: %s", exc)
        return self._offers

    def _enabled_providers(self) -> dict[str, str] | None:
        """provider -> "" (enabled) or why disabled; None when the provisioner cannot say."""
        if self._provisioner is None:
            return {}
        lister = getattr(self._provisioner, "list_providers", None)
        if lister is None:
            return None
        stamp = now()
        if self._providers is None or stamp - self._providers_at > self._offers_ttl_s:
            try:
                self._providers = dict(lister())
                self._providers_at = stamp
            except Exception as exc:
                log.warning("cannot list providers: %s", exc)
                if self._providers is None:
                    return {}
        return self._providers

    def _start_provision(self, ask: Ask, offer: Offer, spot: bool, hourly_price: float) -> str | None:
        """Ask for a node; None when the provisioner is unreachable, StyxError when it refused."""
        assert self._provisioner is not None
        node_id = new_id("node")
        stamp = now()
        row = {
            "node_id": node_id,
            "offer_json": json.dumps(asdict(offer)),
            "spot": spot,
            "created_at": stamp,
            "updated_at": stamp,
            "allocation_id": ask.allocation_id,
            "task_id": ask.task_id,
            "hourly_price": hourly_price,
        }
        try:
            operation_id = self._provisioner.provision(node_id, node_id, offer, spot)
        except Unavailable as exc:
            log.warning("provision request failed: %s", exc)
            return None
        except StyxError as exc:
            kind = _kind_of(exc)
            self._failed_offers[_scope_key(offer, kind)] = (stamp + self._cooldown_s, exc.message)
            with self._engine.begin() as conn:
                conn.execute(
                    insert(t.provisions).values(
                        operation_id="", state="failed", error=exc.message, error_kind=kind, **row
                    )
                )
            log.warning("provision refused", extra={"node_id": node_id, "offer": offer.place, "error": exc.message})
            raise
        except Exception as exc:
            log.warning("provision request failed: %s", exc)
            return None
        prov = _Provision(node_id, operation_id, offer, spot, stamp)
        self._provisions[node_id] = prov
        with self._engine.begin() as conn:
            conn.execute(insert(t.provisions).values(operation_id=operation_id, state="pending", error="", **row))
        log.info("provisioning", extra={"node_id": node_id, "offer": offer.place, "operation_id": operation_id})
        return node_id

    def release(self, allocation_id: str) -> bool:
        """Free an allocation; False when it was unknown or already free."""
        with self._lock:
            alloc = self._allocations.pop(allocation_id, None)
            if alloc is None:
                return False
            self.clusters.touch(alloc.node_id)
            node = self._nodes.get(alloc.node_id)
            if node is not None:
                node.used_cpus = max(0.0, node.used_cpus - alloc.cpus)
                node.used_memory_gib = max(0.0, node.used_memory_gib - alloc.memory_gib)
                node.used_gpus.difference_update(alloc.gpu_indices)
            with self._engine.begin() as conn:
                conn.execute(
                    update(t.allocations).where(t.allocations.c.allocation_id == allocation_id).values(released=True)
                )
            return True

    # ---- reconciliation ---------------------------------------------------------------
    def reconcile(self) -> None:
        """Expire leases, settle provisions that failed or timed out, then tend the clusters."""
        self._reconcile_nodes()
        with self._lock:
            self.clusters.reconcile()

    def _reconcile_nodes(self) -> None:
        stamp = now()
        with self._lock:
            lost = [
                n for n in self._nodes.values() if n.state == READY and stamp - n.last_heartbeat > self.lease_seconds
            ]
            for node in lost:
                node.state = LOST
                log.warning("node lost: no heartbeat", extra={"node_id": node.node_id})
            if lost:
                with self._engine.begin() as conn:
                    conn.execute(
                        update(t.nodes).where(t.nodes.c.node_id.in_([n.node_id for n in lost])).values(state=LOST)
                    )
            pending = list(self._provisions.values())
        for prov in pending:
            state, error, kind = "pending", "", ""
            if self._provisioner is not None and prov.operation_id:
                try:
                    polled = self._provisioner.operation_state(prov.operation_id)
                except Exception as exc:
                    log.warning("cannot poll operation %s: %s", prov.operation_id, exc)
                    continue
                state, error = polled[0], polled[1]
                kind = polled[2] if len(polled) > 2 else ""
            if state != "failed" and stamp - prov.created_at > self._provision_timeout_s:
                state, error, kind = "failed", f"node did not register within {self._provision_timeout_s:g} s", ""
            if state == "failed":
                self._fail_provision(prov, error, kind)

    def _fail_provision(self, prov: _Provision, error: str, kind: str = "") -> None:
        with self._lock:
            if self._provisions.pop(prov.node_id, None) is None:
                return
            stamp = now()
            self._failed_offers[_scope_key(prov.offer, kind)] = (stamp + self._cooldown_s, error)
            with self._engine.begin() as conn:
                conn.execute(
                    update(t.provisions)
                    .where(t.provisions.c.node_id == prov.node_id)
                    .values(state="failed", error=error, error_kind=kind, updated_at=stamp)
                )
        log.warning("provisioning failed", extra={"node_id": prov.node_id, "error": error, "kind": kind})
