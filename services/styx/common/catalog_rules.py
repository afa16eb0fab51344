"""What a provider's instance types are: architecture and category, from their family names.

Catalogs (SkyPilot's CSVs among them) often carry no architecture column and never a
category, yet the optimizer must know both: CPU-only requests default to general-purpose
x86_64 instance types (an ARM or storage-optimized size is opt-in). The knowledge is
cloud-specific, so it lives in each provider's plugin as a ``CatalogAdapter``, found by
provider name: the plugins shipped with Styx are named in ``SHIPPED`` (a name, not an
import, so this module depends on no plugin), other packages add theirs through the
``styx.catalog_adapters`` entry point group (``register`` is for tests). A provider
without an adapter has no opinion: its offers keep their own ``arch`` and count as
general purpose.

An adapter may also take part in reading a SkyPilot CSV (``row_sink``), for clouds whose
rows need more than one pass (GCP prices accelerators per GPU, attached to host VMs).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.metadata import entry_points
from typing import NamedTuple, Protocol

from styx.common.offers import Offer
from styx.common.resources import DEFAULT_ARCH, normalize_arch

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "styx.catalog_adapters"
# Adapters of the plugins shipped with Styx: provider -> "module:attribute". Named here
# rather than only in package metadata so a stale editable install still finds them.
SHIPPED = {
    "aws": "styx_plugins.aws.skypilot_catalog:ADAPTER",
    "azure": "styx_plugins.azure.skypilot_catalog:ADAPTER",
    "gcp": "styx_plugins.gcp.skypilot_catalog:ADAPTER",
}

# Categories an adapter may answer. CPU-only requests use GENERAL_CATEGORIES unless they
# name an instance type: storage-optimized sizes carry local disks a CPU job does not need
# (and catalogs price them oddly), accelerated ones carry devices it does not use.
GENERAL = "general-purpose"
COMPUTE = "compute-optimized"
MEMORY = "memory-optimized"
STORAGE = "storage-optimized"
ACCELERATED = "accelerated"
HPC = "HPC"
OTHER = "special-purpose"
GENERAL_CATEGORIES = frozenset({GENERAL, COMPUTE, MEMORY})


@dataclass(frozen=True)
class FamilyClass:
    """An instance type's CPU architecture ("x86_64" | "arm64") and category (see above)."""

    arch: str
    category: str

    @property
    def general(self) -> bool:
        """Whether CPU-only requests may use it without naming it."""
        return self.category in GENERAL_CATEGORIES


class CsvRow(NamedTuple):
    """One row of a SkyPilot ``vms.csv``, parsed; numbers are None where the cell is empty
    and NaN where it is not a number (a tuple: ~100k of them are built per import)."""

    instance_type: str
    accelerator_name: str
    accelerator_count: float | None
    cpus: float | None
    memory_gib: float | None
    price: float | None
    spot_price: float | None
    region: str
    zone: str
    gpu_memory_gib: float
    arch: str


Skip = Callable[[str], None]


class RowSink(Protocol):
    """Takes part in one CSV read: sees every row first, may keep it, adds offers at the end."""

    def take(self, row: CsvRow, skip: Skip) -> bool:
        """True when the row is this sink's (it is not read as a plain offer)."""
        ...

    def offer_seen(self, row: CsvRow, offer: Offer) -> bool:
        """Called for each valid plain offer; False hides it (e.g. sold only with its GPUs)."""
        ...

    def finish(self, skip: Skip) -> Iterable[Offer]:
        """Offers built from the rows taken (``skip(why)`` counts the rows dropped)."""
        ...


class CatalogAdapter(Protocol):
    """A provider's catalog knowledge (see the module docstring)."""

    def classify(self, instance_type: str) -> FamilyClass | None:
        """Architecture and category of an instance type; None when the family is unknown."""
        ...

    def row_sink(self) -> RowSink | None:
        """A fresh sink for one CSV read, or None when plain rows are all there is."""
        ...


_registered: dict[str, CatalogAdapter] = {}


def register(provider: str, adapter: CatalogAdapter | None) -> None:
    """Use ``adapter`` for ``provider`` (None removes a registration); wins over entry points."""
    if adapter is None:
        _registered.pop(provider, None)
    else:
        _registered[provider] = adapter
    _classify_cached.cache_clear()


def _load(name: str, target: str) -> CatalogAdapter | None:
    module, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]
    except Exception as exc:  # a broken plugin must not take the catalog down
        log.warning("catalog adapter %s (%s) cannot be loaded: %s", name, target, exc)
        return None


@cache
def _discovered() -> dict[str, CatalogAdapter]:
    targets = dict(SHIPPED)
    targets.update({ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)})
    found = {name: _load(name, target) for name, target in sorted(targets.items())}
    return {name: adapter for name, adapter in found.items() if adapter is not None}


def adapter_for(provider: str) -> CatalogAdapter | None:
    """The provider's adapter, or None when it has none."""
    return _registered.get(provider) or _discovered().get(provider)


@lru_cache(maxsize=65536)
def _classify_cached(provider: str, instance_type: str) -> FamilyClass | None:
    adapter = adapter_for(provider)
    return adapter.classify(instance_type) if adapter is not None else None


def classify(provider: str, instance_type: str) -> FamilyClass | None:
    """``adapter_for(provider).classify(instance_type)``, cached; None without an opinion."""
    return _classify_cached(provider, instance_type)


def resolve_arch(provider: str, instance_type: str, given: str) -> str:
    """The architecture an offer really has: its family's (when the adapter knows it), else
    what the row or cloud said, else x86_64. Family rules win because loaders used to fill
    a missing architecture with x86_64, which made ARM sizes look like x86 ones."""
    known = classify(provider, instance_type)
    if known is not None and known.arch:
        return known.arch
    return normalize_arch(given) or DEFAULT_ARCH


def is_general(provider: str, instance_type: str) -> bool:
    """Whether a CPU-only request may use the type unnamed (True when nobody knows better)."""
    known = classify(provider, instance_type)
    return known is None or known.general


def category(provider: str, instance_type: str) -> str:
    """The type's category, "" when its provider has no adapter or the family is unknown."""
    known = classify(provider, instance_type)
    return known.category if known is not None else ""
