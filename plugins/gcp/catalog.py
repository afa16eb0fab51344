"""Build GCP offers from Compute Engine itself: which machine types each zone offers and
what each one is (``machineTypes.aggregatedList``: guestCpus, memoryMb, the GPUs bundled
with the a2/a3/g2 families, architecture), plus which GPUs each zone can attach to N1
machine types (``acceleratorTypes.aggregatedList``).

Compute Engine has no prices; the Cloud Billing Catalog API is a separate service with its
own permissions and SKU model. Prices come from the broker's built-in catalog
(``styx.broker.catalog.builtin_offers``, the gcp part of ``data/builtin_offers.json``):

- the same instance type (and, for GPUs, the same GPU name and count) in the same region:
  that region's price (reference price x the region's price factor);
- the type is known but not in that region: its cheapest known price, times 1.0 (no
  guessed regional markup: the built-in catalog's cheapest region is its reference region,
  so this is the reference price; a region that costs more is under-priced, never
  invented);
- the type is unknown: left out by default, since the broker ranks cheapest first and a
  price of 0 would make it win every time; ``include_unpriced`` keeps it at price 0.

N1 machine types come without GPUs from the API; a GPU variant (e.g. n1-standard-4 + T4) is
offered only where the built-in catalog prices that combination AND the zone lists that
accelerator type, since the provider attaches N1 GPUs itself at create.

No SDK import here: the caller passes what the SDK's pagers yield.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from styx.provisioner.provider import Offer
from styx_plugins.gcp import naming

log = logging.getLogger(__name__)

#: GCE accelerator type -> (the catalog's GPU name, memory GiB per GPU).
GCE_GPUS: dict[str, tuple[str, float]] = {
    "nvidia-tesla-k80": ("K80", 12),
    "nvidia-tesla-p4": ("P4", 8),
    "nvidia-tesla-p100": ("P100", 16),
    "nvidia-tesla-v100": ("V100", 16),
    "nvidia-tesla-t4": ("T4", 16),
    "nvidia-tesla-a100": ("A100", 40),
    "nvidia-a100-80gb": ("A100-80GB", 80),
    "nvidia-l4": ("L4", 24),
    "nvidia-h100-80gb": ("H100", 80),
    "nvidia-h100-mega-80gb": ("H100-MEGA", 80),
    "nvidia-h200-141gb": ("H200", 141),
}
#: GPUs that are attached to N1 machine types: catalog name -> GCE accelerator type.
N1_ACCELERATORS: dict[str, str] = {
    GCE_GPUS[gce][0]: gce
    for gce in ("nvidia-tesla-t4", "nvidia-tesla-v100", "nvidia-tesla-p100", "nvidia-tesla-p4", "nvidia-tesla-k80")
}
# Machine types in these deprecation states can no longer be created.
_GONE = frozenset({"OBSOLETE", "DELETED"})


def gpu_name(gce_type: str) -> tuple[str, float]:
    """(catalog spelling, memory GiB) of a GCE accelerator type; unknown ones get a best
    effort name ("nvidia-foo-bar" -> "FOO-BAR") and 0 GiB."""
    known = GCE_GPUS.get(gce_type)
    if known is not None:
        return known
    return gce_type.removeprefix("nvidia-").removeprefix("tesla-").upper(), 0.0


def region_of(zone: str) -> str:
    """``us-central1-a`` -> ``us-central1``."""
    return zone.rsplit("-", 1)[0]


@dataclass(frozen=True)
class _Price:
    price: float
    spot: float
    name: str  # the catalog's GPU spelling ("" without GPUs)
    memory_gib: float


class PriceBook:
    """Built-in GCP prices by (instance type, GPU name, GPU count) and region."""

    def __init__(self, offers: Iterable[Offer]) -> None:
        self._prices: dict[tuple[str, str, int], dict[str, _Price]] = {}
        for o in offers:
            if o.provider != "gcp":
                continue
            name = o.accelerator_name if o.accelerator_count else ""
            key = (o.instance_type, name.upper(), o.accelerator_count)
            price = _Price(o.price_per_hour, o.spot_price_per_hour, name, o.accelerator_memory_gib)
            self._prices.setdefault(key, {})[o.region] = price

    @classmethod
    def builtin(cls) -> PriceBook:
        """Prices of the broker's built-in catalog (empty, with a warning, when unavailable)."""
        try:
            from styx.broker.catalog import builtin_offers

            return cls(builtin_offers())
        except Exception as exc:  # no broker data installed: nothing is priced
            log.warning("built-in GCP prices unavailable: %s", exc)
            return cls(())

    def lookup(self, instance_type: str, gpu: str, count: int, region: str) -> _Price | None:
        """The region's price, else the cheapest known one (see the module docstring)."""
        by_region = self._prices.get((instance_type, gpu.upper() if count else "", count))
        if by_region is None and count:
            # The API's GPU spelling may differ from the catalog's: match on the count alone.
            matches = [v for (t, _, n), v in self._prices.items() if t == instance_type and n == count]
            by_region = matches[0] if len(matches) == 1 else None
        if not by_region:
            return None
        if region in by_region:
            return by_region[region]
        return min(by_region.values(), key=lambda p: (p.price, p.spot))

    def n1_gpus(self, instance_type: str) -> list[tuple[str, int]]:
        """(GPU name, count) combinations the catalog prices on this N1 machine type."""
        return sorted({(v.name, n) for (t, _, n), regions in self._prices.items() if t == instance_type and n
                       for v in regions.values()})  # fmt: skip


def build_catalog(
    machine_types: Iterable[tuple[str, Any]],
    accelerator_types: Iterable[tuple[str, Any]],
    regions: Iterable[str] | None = None,
    include_unpriced: bool = False,
    prices: PriceBook | None = None,
) -> list[Offer]:
    """Offers (one per machine type and zone, plus N1 GPU variants) of ``regions`` (None:
    every region the API lists).

    ``machine_types`` / ``accelerator_types`` are what the SDK's aggregated-list pagers yield:
    ``(scope, scoped list)`` pairs whose lists hold ``MachineType`` / ``AcceleratorType``.
    """
    book = prices if prices is not None else PriceBook.builtin()
    wanted = set(regions) if regions is not None else None
    attachable: dict[str, dict[str, int]] = {}  # zone -> GCE GPU type -> max cards
    for scope, scoped in accelerator_types:
        for acc in scoped.accelerator_types:
            zone = naming.zone_of(acc.zone or scope)
            attachable.setdefault(zone, {})[acc.name] = int(acc.maximum_cards_per_instance or 0)
    offers: dict[tuple[str, str, str, str], Offer] = {}
    for scope, scoped in machine_types:
        for mt in scoped.machine_types:
            zone = naming.zone_of(mt.zone or scope)
            region = region_of(zone)
            if wanted is not None and region not in wanted:
                continue
            if mt.deprecated and mt.deprecated.state in _GONE:
                continue
            for offer in _offers_of(mt, zone, region, attachable.get(zone, {}), book, include_unpriced):
                offers[(offer.zone, offer.instance_type, offer.accelerator_name, str(offer.accelerator_count))] = offer
    return [offers[k] for k in sorted(offers)]


def _offers_of(
    mt: Any, zone: str, region: str, attachable: dict[str, int], book: PriceBook, include_unpriced: bool
) -> list[Offer]:
    cpus = float(mt.guest_cpus)
    memory = round(float(mt.memory_mb) / 1024, 2)
    arch = "arm64" if str(mt.architecture).upper() == "ARM64" else "x86_64"
    gpu, count, gpu_memory = "", 0, 0.0
    if mt.accelerators:
        gpu, gpu_memory = gpu_name(mt.accelerators[0].guest_accelerator_type)
        count = int(mt.accelerators[0].guest_accelerator_count)
    out = []
    price = book.lookup(mt.name, gpu, count, region)
    if price is not None or include_unpriced:
        if price is not None and price.name:
            gpu = price.name  # the catalog's spelling (e.g. "A100-80GB")
            gpu_memory = price.memory_gib or gpu_memory
        out.append(_offer(region, zone, mt.name, cpus, memory, gpu, count, gpu_memory, price, arch))
    if mt.name.startswith("n1-") and not count:
        for name, n in book.n1_gpus(mt.name):
            gce = N1_ACCELERATORS.get(name.upper())
            if gce is None or gce not in attachable or n > (attachable[gce] or n):
                continue
            priced = book.lookup(mt.name, name, n, region)
            memory_per_gpu = priced.memory_gib if priced and priced.memory_gib else GCE_GPUS[gce][1]
            out.append(_offer(region, zone, mt.name, cpus, memory, name, n, memory_per_gpu, priced, arch))
    return out


def _offer(
    region: str,
    zone: str,
    instance_type: str,
    cpus: float,
    memory_gib: float,
    gpu: str,
    count: int,
    gpu_memory_gib: float,
    price: _Price | None,
    arch: str,
) -> Offer:
    return Offer(
        provider="gcp",
        region=region,
        zone=zone,
        instance_type=instance_type,
        cpus=cpus,
        memory_gib=memory_gib,
        accelerator_name=gpu if count else "",
        accelerator_count=count,
        accelerator_memory_gib=round(gpu_memory_gib, 2) if count else 0.0,
        price_per_hour=round(price.price, 6) if price else 0.0,
        spot_price_per_hour=round(price.spot, 6) if price else 0.0,
        arch=arch,
    )
