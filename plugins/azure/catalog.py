"""Build Azure offers from Azure itself: the Resource SKUs API (``GET
/subscriptions/{sub}/providers/Microsoft.Compute/skus?$filter=location eq '<region>'``)
says which VM sizes a region offers this subscription and what each is (vCPUs, memory,
GPU count, CPU architecture, spot support).

What is kept: ``resourceType == "virtualMachines"`` SKUs listed for the region, except
those carrying a ``NotAvailableForSubscription`` restriction of type ``Location`` for that
region (the size cannot be created there at all). A ``Zone`` restriction only rules out
some zones; Styx's Azure offers are per region (``zone=""``, Azure picks the zone), so
such a size stays.

Prices: the SKU API has none (Azure's Retail Prices API is a separate service), so offers
are priced from the broker's built-in catalog (``styx.broker.catalog.builtin_offers``):
the built-in azure offer of the same size and region when there is one; otherwise (a
region the built-in catalog does not list) the size's cheapest built-in price in any
region. The cheapest, not an average, because it is the price the built-in catalog would
give the size in its reference region; a region missing from it gets no invented
surcharge. Sizes the built-in catalog does not know are left out unless
``include_unpriced`` (then at price 0): the broker ranks cheapest first, and a price of 0
would make them win every time.

The GPU model: the SKU API gives only a count (``GPUs``), so the model name comes from the
built-in catalog's row of the same size ("T4", "A100-80GB"); an unknown GPU size (only
with ``include_unpriced``) has an empty model name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from styx.provisioner.provider import Offer

log = logging.getLogger(__name__)

VM_RESOURCE_TYPE = "virtualMachines"
NOT_AVAILABLE = "NotAvailableForSubscription"


def builtin_azure_offers() -> list[Offer]:
    """The built-in catalog's azure offers ([] when the broker's data is not installed)."""
    try:
        from styx.broker.catalog import builtin_offers

        return [o for o in builtin_offers() if o.provider == "azure"]
    except Exception as exc:  # no broker data installed: nothing is priced
        log.warning("built-in Azure prices unavailable: %s", exc)
        return []


def builtin_regions() -> list[str]:
    """Regions of the built-in catalog's azure offers (the default regions to refresh)."""
    return sorted({o.region for o in builtin_azure_offers()})


class PriceBook:
    """Built-in prices by (size, region), with the size's cheapest price as a fallback."""

    def __init__(self, offers: Iterable[Offer]) -> None:
        self.by_place: dict[tuple[str, str], Offer] = {}
        self.cheapest: dict[str, Offer] = {}
        for offer in offers:
            size = offer.instance_type.lower()  # ARM size names are case-insensitive
            self.by_place[(size, offer.region.lower())] = offer
            best = self.cheapest.get(size)
            if best is None or offer.price_per_hour < best.price_per_hour:
                self.cheapest[size] = offer

    def lookup(self, size: str, region: str) -> Offer | None:
        """The built-in offer pricing ``size`` in ``region`` (see the module docstring)."""
        key = size.lower()
        return self.by_place.get((key, region.lower())) or self.cheapest.get(key)


def build_catalog(
    regions: Iterable[str], list_skus: Callable[[str], Iterable[Any]], include_unpriced: bool = False
) -> list[Offer]:
    """Offers (one per VM size and region) for ``regions``; ``list_skus(region)`` yields the
    region's Resource SKUs (SDK models or their wire-format dicts)."""
    book = PriceBook(builtin_azure_offers())
    offers: list[Offer] = []
    for region in regions:
        seen: set[str] = set()
        for item in list_skus(region):
            sku = _wire(item)
            name = str(sku.get("name") or "")
            if sku.get("resourceType") != VM_RESOURCE_TYPE or not name or name.lower() in seen:
                continue
            if not _listed_in(sku, region) or _restricted(sku, region):
                continue
            row = book.lookup(name, region)
            if row is None and not include_unpriced:
                continue
            seen.add(name.lower())
            offers.append(_offer(region, name, _capabilities(sku), row))
    return offers


def _wire(obj: Any) -> Mapping[str, Any]:
    """The wire-format (camelCase) view of an SDK model (>= 39: a Mapping already)."""
    if isinstance(obj, Mapping):
        return obj
    serialize = getattr(obj, "serialize", None)
    return serialize(keep_readonly=True) if callable(serialize) else {}


def _listed_in(sku: Mapping[str, Any], region: str) -> bool:
    """Whether the SKU names ``region`` (the filter already asks for it; checked because
    the API documents only the location filter, and a SKU without locations says nothing)."""
    locations = [str(x).lower() for x in sku.get("locations") or []]
    return not locations or region.lower() in locations


def _restricted(sku: Mapping[str, Any], region: str) -> bool:
    """True when a NotAvailableForSubscription restriction of type Location covers ``region``."""
    for restriction in sku.get("restrictions") or []:
        if restriction.get("reasonCode") != NOT_AVAILABLE:
            continue
        if str(restriction.get("type") or "Location") != "Location":
            continue  # a Zone restriction: the region still has the size in other zones
        info = restriction.get("restrictionInfo") or {}
        covered = [str(x).lower() for x in (info.get("locations") or restriction.get("values") or [])]
        if not covered or region.lower() in covered:
            return True
    return False


def _capabilities(sku: Mapping[str, Any]) -> dict[str, str]:
    return {str(c.get("name")): str(c.get("value")) for c in sku.get("capabilities") or [] if c.get("name")}


def _number(caps: Mapping[str, str], name: str) -> float:
    try:
        return float(caps.get(name, "0") or 0)
    except ValueError:
        return 0.0


def _offer(region: str, name: str, caps: Mapping[str, str], row: Offer | None) -> Offer:
    gpus = int(_number(caps, "GPUs"))
    # LowPriorityCapable: whether Spot (and low-priority) VMs of this size can be created.
    spot_ok = caps.get("LowPriorityCapable", "True").lower() == "true"
    arch = "arm64" if caps.get("CpuArchitectureType", "x64").lower() == "arm64" else "x86_64"
    price = row.price_per_hour if row else 0.0
    spot = row.spot_price_per_hour if row and spot_ok else 0.0
    return Offer(
        provider="azure",
        region=region,
        zone="",  # Styx's Azure offers are per region; Azure places the VM
        instance_type=name,
        cpus=_number(caps, "vCPUs"),
        memory_gib=round(_number(caps, "MemoryGB"), 2),
        accelerator_name=row.accelerator_name if row and gpus else "",
        accelerator_count=gpus,
        accelerator_memory_gib=row.accelerator_memory_gib if row and gpus else 0.0,
        price_per_hour=round(price, 6),
        spot_price_per_hour=round(spot, 6),
        arch=arch,
    )
