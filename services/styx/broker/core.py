"""Resource broker logic: nodes, capacity, best-fit placement and provisioning requests.

The store is the truth; an in-memory view of nodes and allocations (rebuilt from the store
at start) keeps placement fast. Placement is best fit: among READY nodes that satisfy the
request, take the one left with the least free CPU (then memory), so big nodes stay free for
big tasks. When nothing fits, the broker looks at offers: none could ever fit -> INFEASIBLE
with the reason; otherwise it waits for busy capacity or asks the provisioner for a node.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from sqlalchemy import Engine, insert, select, update

from styx.broker import tables as t
from styx.common.errors import InvalidArgument, NotFound
from styx.common.ids import new_id
from styx.common.offers import Offer
from styx.common.resources import Capacity, GpuDevice, Resources, gpu_matches, infra_parts
from styx.common.store import create_tables
from styx.common.timeutil import now

log = logging.getLogger(__name__)

_EPS = 1e-9
READY, LOST = "READY", "LOST"
PLACED, WAITING, INFEASIBLE = "placed", "waiting", "infeasible"


class ProvisionerPort(Protocol):
    """What the broker needs from the provisioner (a gRPC adapter in production)."""

    def list_offers(self) -> list[Offer]:
        """Offers of every enabled provider."""
        ...

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        """Start creating a node; return the operation id."""
        ...

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        """Return ("pending"|"running"|"done"|"failed", error message)."""
        ...


@dataclass
class NodeView:
    """A node with its capacity and what is reserved on it."""

    node_id: str
    provider: str
    instance_id: str
    region: str
    zone: str
    instance_type: str
    total: Capacity
    labels: dict[str, str]
    state: str
    registered_at: float
    last_heartbeat: float
    used_cpus: float = 0.0
    used_memory_gib: float = 0.0
    used_gpus: set[int] = field(default_factory=set)

    def free_gpus(self, name: str) -> list[int]:
        """Indices of free GPUs of the given kind, lowest first."""
        return sorted(g.index for g in self.total.gpus if g.index not in self.used_gpus and gpu_matches(g.name, name))


@dataclass(frozen=True)
class Ask:
    """One placement request."""

    allocation_id: str
    task_id: str
    resources: Resources


@dataclass(frozen=True)
class Placement:
    """The answer to an Ask: placed (with node and GPUs), waiting, or infeasible."""

    allocation_id: str
    outcome: str
    node_id: str = ""
    gpu_indices: tuple[int, ...] = ()
    reason: str = ""


@dataclass
class _Allocation:
    allocation_id: str
    task_id: str
    node_id: str
    cpus: float
    memory_gib: float
    gpu_indices: tuple[int, ...]


@dataclass
class _Provision:
    node_id: str
    operation_id: str
    offer: Offer
    spot: bool
    created_at: float


def describe(res: Resources) -> str:
    """A short human description of a request: "cpus=4+, memory=16 GiB, A100:8"."""
    parts = [f"cpus={res.cpus:g}{'+' if res.cpus_at_least else ''}"]
    if res.memory_gib:
        parts.append(f"memory={res.memory_gib:g}{'+' if res.memory_at_least else ''} GiB")
    if res.accelerators:
        parts.append(" or ".join(f"{a.name}:{a.count}" for a in res.accelerators))
    if res.infra:
        parts.append(f"infra={res.infra}")
    return ", ".join(parts)


def _in_infra(res: Resources, provider: str, region: str, zone: str) -> bool:
    want_provider, want_region, want_zone = infra_parts(res.infra)
    return (
        (not want_provider or want_provider == provider)
        and (not want_region or want_region == region)
        and (not want_zone or want_zone == zone)
    )


def offer_fits(offer: Offer, res: Resources) -> bool:
    """Whether one instance of ``offer`` could ever hold the request."""
    if not _in_infra(res, offer.provider, offer.region, offer.zone):
        return False
    if offer.cpus + _EPS < res.cpus or offer.memory_gib + _EPS < res.memory_gib:
        return False
    if not res.accelerators:
        return True
    return any(
        offer.accelerator_count >= a.count and gpu_matches(offer.accelerator_name, a.name) for a in res.accelerators
    )


def _offer_key(offer: Offer) -> tuple[str, str, str, str]:
    return (offer.provider, offer.region, offer.zone, offer.instance_type)


class Broker:
    """Owns nodes and allocations; thread-safe (one lock guards the in-memory view)."""

    def __init__(
        self,
        engine: Engine,
        provisioner: ProvisionerPort | None = None,
        lease_seconds: float = 15.0,
        provision_timeout_s: float = 300.0,
        offers_ttl_s: float = 30.0,
        failed_offer_cooldown_s: float = 60.0,
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
        self._failed_offers: dict[tuple[str, str, str, str], tuple[float, str]] = {}
        create_tables(engine, t.metadata)
        self._load()

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
    ) -> NodeView:
        """Add a node or refresh its capacity; idempotent on node_id."""
        if not node_id:
            raise InvalidArgument("node_id: required")
        if capacity.cpus <= 0:
            raise InvalidArgument(f"capacity.cpus: must be greater than 0, got {capacity.cpus}")
        if capacity.memory_gib < 0:
            raise InvalidArgument("capacity.memory_gib: must not be negative")
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
            }
            with self._engine.begin() as conn:
                if existing is None:
                    conn.execute(insert(t.nodes).values(node_id=node_id, registered_at=stamp, **row))
                else:
                    conn.execute(update(t.nodes).where(t.nodes.c.node_id == node_id).values(**row))
                if node_id in self._provisions:
                    conn.execute(
                        update(t.provisions).where(t.provisions.c.node_id == node_id).values(state="registered")
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
            node.last_heartbeat = now()
            if node.state == LOST:
                node.state = READY
                with self._engine.begin() as conn:
                    conn.execute(update(t.nodes).where(t.nodes.c.node_id == node_id).values(state=READY))
            return True

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
            nodes = [n for n in self._nodes.values() if include_lost or n.state != LOST]
        return sorted(nodes, key=lambda n: (n.registered_at, n.node_id))

    # ---- placement ---------------------------------------------------------------------
    def allocate(self, asks: Sequence[Ask]) -> list[Placement]:
        """Place a batch of asks in order; idempotent per allocation_id."""
        if len(asks) > 10000:
            raise InvalidArgument(f"requests: at most 10000 per call, got {len(asks)}")
        with self._lock:
            pending_free = {p.node_id: Capacity(p.offer.cpus, p.offer.memory_gib) for p in self._provisions.values()}
            new_allocs: list[_Allocation] = []
            results = []
            for ask in asks:
                done = self._allocations.get(ask.allocation_id)
                if done is not None:
                    results.append(Placement(ask.allocation_id, PLACED, done.node_id, done.gpu_indices))
                    continue
                alloc = self._place(ask)
                if alloc is not None:
                    self._remember(alloc)
                    new_allocs.append(alloc)
                    results.append(Placement(ask.allocation_id, PLACED, alloc.node_id, alloc.gpu_indices))
                else:
                    results.append(self._no_fit(ask, pending_free))
            if new_allocs:
                stamp = now()
                with self._engine.begin() as conn:
                    conn.execute(
                        insert(t.allocations),
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

    def _place(self, ask: Ask) -> _Allocation | None:
        res = ask.resources
        best: tuple[tuple[float, float, str], NodeView, tuple[int, ...]] | None = None
        for node in self._nodes.values():
            if node.state != READY or not _in_infra(res, node.provider, node.region, node.zone):
                continue
            free_cpus = node.total.cpus - node.used_cpus
            free_mem = node.total.memory_gib - node.used_memory_gib
            if free_cpus + _EPS < res.cpus or free_mem + _EPS < res.memory_gib:
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
            score = (free_cpus - res.cpus, free_mem - res.memory_gib, node.node_id)
            if best is None or score < best[0]:
                best = (score, node, gpus)
        if best is None:
            return None
        _, node, gpus = best
        return _Allocation(ask.allocation_id, ask.task_id, node.node_id, res.cpus, res.memory_gib, gpus)

    def _no_fit(self, ask: Ask, pending_free: dict[str, Capacity]) -> Placement:
        res = ask.resources
        # A node still being provisioned whose offer fits absorbs the ask.
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
        busy_fit = [n for n in self._nodes.values() if n.state == READY and self._node_could_fit(n, res)]
        offers = self._current_offers()
        feasible = [o for o in offers if offer_fits(o, res)]
        if not feasible and not busy_fit:
            return Placement(ask.allocation_id, INFEASIBLE, reason=self._infeasible_reason(res, offers))
        cooling: list[str] = []
        stamp = now()
        for offer in sorted(
            feasible, key=lambda o: (o.hourly_price(res.use_spot), o.cpus, o.memory_gib, _offer_key(o))
        ):
            cooldown = self._failed_offers.get(_offer_key(offer))
            if cooldown and cooldown[0] > stamp:
                cooling.append(f"{offer.place}: {cooldown[1]}")
                continue
            if offer.max_instances and self._instances_of(offer) >= offer.max_instances:
                continue
            node_id = self._start_provision(offer, res.use_spot)
            if node_id is None:
                return Placement(ask.allocation_id, WAITING, reason="provisioner unavailable; will retry")
            pending_free[node_id] = Capacity(offer.cpus - res.cpus, offer.memory_gib - res.memory_gib)
            return Placement(ask.allocation_id, WAITING, reason=f"provisioning node {node_id} ({offer.place})")
        if busy_fit:
            return Placement(ask.allocation_id, WAITING, reason="waiting for capacity on busy nodes")
        if cooling:
            return Placement(ask.allocation_id, WAITING, reason="recent provisioning failures: " + "; ".join(cooling))
        return Placement(ask.allocation_id, WAITING, reason="every feasible offer is at its instance limit")

    @staticmethod
    def _node_could_fit(node: NodeView, res: Resources) -> bool:
        if not _in_infra(res, node.provider, node.region, node.zone):
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
            if n.state != LOST and (n.provider, n.region, n.zone, n.instance_type) == key
        )
        return live + sum(1 for p in self._provisions.values() if _offer_key(p.offer) == key)

    def _infeasible_reason(self, res: Resources, offers: Iterable[Offer]) -> str:
        candidates = [o for o in offers if _in_infra(res, o.provider, o.region, o.zone)]
        if not candidates:
            where = f" in {res.infra}" if res.infra else ""
            return f"no enabled provider offers capacity{where}; `sky check` shows providers"
        biggest = sorted(candidates, key=lambda o: (-o.cpus, -o.memory_gib))[:3]
        shown = "; ".join(
            f"{o.place} has {o.cpus:g} CPUs, {o.memory_gib:.1f} GiB"
            + (f", {o.accelerator_count}x {o.accelerator_name}" if o.accelerator_count else ", no GPU")
            for o in biggest
        )
        return f"no enabled provider can satisfy {describe(res)}: largest offers: {shown}"

    def _current_offers(self) -> list[Offer]:
        if self._provisioner is None:
            return []
        stamp = now()
        if not self._offers or stamp - self._offers_at > self._offers_ttl_s:
            try:
                self._offers = self._provisioner.list_offers()
                self._offers_at = stamp
            except Exception as exc:
                log.warning("cannot list offers: %s", exc)
        return self._offers

    def _start_provision(self, offer: Offer, spot: bool) -> str | None:
        assert self._provisioner is not None
        node_id = new_id("node")
        try:
            operation_id = self._provisioner.provision(node_id, node_id, offer, spot)
        except Exception as exc:
            log.warning("provision request failed: %s", exc)
            return None
        prov = _Provision(node_id, operation_id, offer, spot, now())
        self._provisions[node_id] = prov
        with self._engine.begin() as conn:
            conn.execute(
                insert(t.provisions).values(
                    node_id=node_id,
                    operation_id=operation_id,
                    offer_json=json.dumps(asdict(offer)),
                    spot=spot,
                    state="pending",
                    error="",
                    created_at=prov.created_at,
                )
            )
        log.info("provisioning", extra={"node_id": node_id, "offer": offer.place, "operation_id": operation_id})
        return node_id

    def release(self, allocation_id: str) -> bool:
        """Free an allocation; False when it was unknown or already free."""
        with self._lock:
            alloc = self._allocations.pop(allocation_id, None)
            if alloc is None:
                return False
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
        """Expire leases of silent nodes and settle provisions that failed or timed out."""
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
            state, error = "pending", ""
            if self._provisioner is not None and prov.operation_id:
                try:
                    state, error = self._provisioner.operation_state(prov.operation_id)
                except Exception as exc:
                    log.warning("cannot poll operation %s: %s", prov.operation_id, exc)
                    continue
            if state != "failed" and stamp - prov.created_at > self._provision_timeout_s:
                state, error = "failed", f"node did not register within {self._provision_timeout_s:g} s"
            if state == "failed":
                self._fail_provision(prov, error)

    def _fail_provision(self, prov: _Provision, error: str) -> None:
        with self._lock:
            if self._provisions.pop(prov.node_id, None) is None:
                return
            self._failed_offers[_offer_key(prov.offer)] = (now() + self._cooldown_s, error)
            with self._engine.begin() as conn:
                conn.execute(
                    update(t.provisions)
                    .where(t.provisions.c.node_id == prov.node_id)
                    .values(state="failed", error=error)
                )
        log.warning("provisioning failed", extra={"node_id": prov.node_id, "error": error})
