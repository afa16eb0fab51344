"""The broker's domain types: nodes, asks' bookkeeping, provisioning attempts, catalog
views, and the small pure helpers placement uses (fit tests, failover scopes, free index).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from styx.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from styx.common.offers import Offer
from styx.common.resources import IMAGE_LABEL, Capacity, Resources, gpu_matches, infra_parts, normalize_arch

log = logging.getLogger(__name__)

_EPS = 1e-9
READY, LOST = "READY", "LOST"
# Deregistered by its agent or provider: like LOST, but a heartbeat does not revive it
# (only a fresh RegisterNode does).
GONE = "GONE"
ABSENT = frozenset({LOST, GONE})
# Label carrying a node's architecture, set at registration from its provisioned offer.
ARCH_LABEL = "styx.dev/arch"


class ProvisionerPort(Protocol):
    """What the broker needs from the provisioner (a gRPC adapter in production)."""

    def list_offers(self) -> list[Offer]:
        """Offers of every enabled provider (host offers: machines that already exist)."""
        ...

    def list_providers(self) -> dict[str, str]:
        """Every loaded provider -> "" when enabled, else why it is disabled.

        Optional for test doubles: without it every provider is taken as enabled.
        """
        ...

    def list_capabilities(self) -> dict[str, tuple[str, ...]]:
        """Every loaded provider -> the capabilities it declares (e.g. "images").

        Optional for test doubles: without it no provider runs a per-task image_id.
        """
        ...

    def provision(
        self, request_id: str, node_id: str, offer: Offer, spot: bool, labels: Mapping[str, str] | None = None
    ) -> str:
        """Start creating a node; return the operation id. ``labels`` go onto the instance
        (optional for test doubles that are never asked for an image).

        Raise ``Unavailable`` when the provisioner cannot be reached (the ask waits), other
        ``StyxError`` when it refuses the offer (the broker fails over to the next offer).
        """
        ...

    def terminate(self, node_id: str) -> None:
        """Start terminating a node's instance (idempotent; NotFound when the provisioner never made it)."""
        ...

    def stop(self, node_id: str) -> None:
        """Start stopping a node's instance; FailedPrecondition when its provider cannot."""
        ...

    def start(self, node_id: str) -> None:
        """Start a stopped node's instance again."""
        ...

    def operation_state(self, operation_id: str) -> tuple[str, str] | tuple[str, str, str]:
        """Return ("pending"|"running"|"done"|"failed", error message[, error kind]).

        The kind ("capacity", "quota", "auth", "invalid", "internal") scopes the failover.
        """
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
    address: str = ""

    @property
    def cluster(self) -> str:
        """Named cluster the node belongs to, or "" for the shared pool."""
        return self.labels.get("styx.dev/cluster", "")

    @property
    def arch(self) -> str:
        """The node's CPU architecture (from the offer it was provisioned from), "" when unknown."""
        return self.labels.get(ARCH_LABEL, "")

    def runs(self, res: Resources) -> bool:
        """Whether a request's architecture (when it names one) is the node's (unknown: any),
        and its image_id (when it names one) the image the node was started with."""
        if res.image_id and self.labels.get(IMAGE_LABEL, "") != res.image_id:
            return False
        return not res.arch or not self.arch or normalize_arch(self.arch) == normalize_arch(res.arch)

    def free_gpus(self, name: str) -> list[int]:
        """Indices of free GPUs of the given kind, lowest first."""
        return sorted(g.index for g in self.total.gpus if g.index not in self.used_gpus and gpu_matches(g.name, name))


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
    #: The allocation it was started for: the provisions of one gang share it.
    allocation_id: str = ""
    #: The image_id the node is to run ("" : the provider's default).
    image_id: str = ""


@dataclass(frozen=True)
class Attempt:
    """One provisioning attempt (a row of broker_provisions)."""

    node_id: str
    allocation_id: str
    task_id: str
    offer: Offer
    spot: bool
    hourly_price: float
    state: str  # pending | registered | failed | lost (its instance vanished later)
    error: str
    error_kind: str
    operation_id: str
    started_at: float
    updated_at: float


@dataclass(frozen=True)
class CatalogInfo:
    """One provider's part of the catalog."""

    provider: str
    offers: int
    imported: bool
    imported_at: float
    regions: int


@dataclass(frozen=True)
class AcceleratorOffer:
    """Cheapest offer of a provider for one accelerator count."""

    count: int
    cheapest: Offer
    cheapest_spot: float


@dataclass(frozen=True)
class AcceleratorInfo:
    """An accelerator kind: counts, providers, cheapest offers."""

    name: str
    counts: tuple[int, ...]
    providers: tuple[str, ...]
    offers: tuple[AcceleratorOffer, ...]
    memory_gib: float


# Error kind -> the failover scope a failure cools down (see the module docstring).
_SCOPE_OF_KIND = {"quota": "region", "auth": "provider"}
_FAILOVER_DEPTH = 64
MAX_IMPORT_OFFERS = 250_000


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
    # A booting node of the other architecture must not absorb a request that names one.
    if res.arch and normalize_arch(offer.arch) != normalize_arch(res.arch):
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


def _scope_keys(offer: Offer) -> tuple[tuple[str, ...], ...]:
    """Cooldown keys that cover an offer: the offer itself, its region, its provider."""
    return (
        ("offer", *_offer_key(offer)),
        ("region", offer.provider, offer.region),
        ("provider", offer.provider),
    )


def _spot_key(offer: Offer) -> tuple[str, ...]:
    """Cooldown key of an offer's spot market only (a reclaimed spot node cools it)."""
    return ("spot", *_offer_key(offer))


def _scope_key(offer: Offer, kind: str) -> tuple[str, ...]:
    scope = _SCOPE_OF_KIND.get(kind, "offer")
    keys = {k[0]: k for k in _scope_keys(offer)}
    return keys[scope]


def _kind_of(exc: Exception) -> str:
    if isinstance(exc, ResourceExhausted):
        return "quota"
    if isinstance(exc, FailedPrecondition):
        return "auth"  # the provisioner refuses offers of disabled providers
    if isinstance(exc, InvalidArgument):
        return "invalid"
    return "internal"


class _FreeIndex:
    """READY nodes of one allocate batch, sorted by (free CPUs, free memory, node id).

    Built per batch under the broker's lock, so it needs no upkeep elsewhere; placing a
    task re-sorts only that node. Candidates for a request start at the first node with
    enough free CPUs (bisect), in best-fit order.
    """

    def __init__(self, nodes: Iterable[NodeView]) -> None:
        self._nodes = {n.node_id: n for n in nodes if n.state == READY}
        self._key = {node_id: self._key_of(n) for node_id, n in self._nodes.items()}
        self._keys = sorted(self._key.values())

    @staticmethod
    def _key_of(node: NodeView) -> tuple[float, float, str]:
        return (node.total.cpus - node.used_cpus, node.total.memory_gib - node.used_memory_gib, node.node_id)

    def candidates(self, cpus: float) -> Iterator[tuple[NodeView, float]]:
        """(node, free memory) of nodes with at least ``cpus`` free CPUs, best fit first."""
        keys = self._keys
        for i in range(bisect.bisect_left(keys, (cpus - _EPS,)), len(keys)):
            key = keys[i]
            yield self._nodes[key[2]], key[1]

    def update(self, node: NodeView) -> None:
        """Re-sort ``node`` after its usage changed."""
        old = self._key.get(node.node_id)
        if old is None:
            return
        del self._keys[bisect.bisect_left(self._keys, old)]
        new = self._key[node.node_id] = self._key_of(node)
        bisect.insort(self._keys, new)
