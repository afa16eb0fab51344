"""The offer catalog: every instance type the broker may ask the provisioner for, indexed.

A ``Catalog`` is immutable once built (a new one replaces it on import), so readers need
no lock. Its index answers the optimizer's questions without scanning every offer:

- offers are grouped by (provider, region or "" for all regions, accelerator name) and,
  inside a group, by *shape* (accelerator count, vCPUs, memory);
- each shape keeps its offers sorted by on-demand price and, separately, by spot price,
  ties broken by (provider, region, zone, instance type) so answers are deterministic.

A request then selects the few shapes it accepts (exact or at-least vCPUs and memory,
exact accelerator count) and merges their sorted lists lazily, cheapest first, stopping
after ``limit`` offers. Family summaries (one per provider and instance family) explain
rejections without touching individual offers.

Shapes and family summaries are also split by CPU architecture and by whether the type
is general purpose (``styx.common.catalog_rules``), so the optimizer's defaults (x86_64,
general-purpose families for CPU-only requests) select shapes, not individual offers.

``builtin_offers`` reads the project's own catalog (``data/builtin_offers.json``); the
SkyPilot CSV loaders live in ``styx.common.skypilot_csv``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import resources as importlib_resources

from styx.common import catalog_rules
from styx.common.offers import Offer, gc_paused, make_offer

# The SkyPilot CSV loaders moved to styx.common.skypilot_csv (the CLI uses them, the broker
# does not); these names stay importable from here.
from styx.common.skypilot_csv import LoadStats, load_skypilot_csv, load_skypilot_dir

__all__ = [
    "Catalog",
    "FamilySummary",
    "LoadStats",
    "Shape",
    "builtin_offers",
    "family_of",
    "gc_paused",
    "load_skypilot_csv",
    "load_skypilot_dir",
    "make_offer",
    "offers_from_builtin",
]


def order_key(offer: Offer) -> tuple[str, str, str, str]:
    """Deterministic tie-break between equally priced offers."""
    return (offer.provider, offer.region, offer.zone, offer.instance_type)


def ondemand_key(offer: Offer) -> tuple[float, str, str, str, str]:
    """Sort key: on-demand price, then place and type."""
    return (offer.price_per_hour, offer.provider, offer.region, offer.zone, offer.instance_type)


def spot_key(offer: Offer) -> tuple[float, str, str, str, str]:
    """Sort key: spot price, then place and type."""
    return (offer.spot_price_per_hour, offer.provider, offer.region, offer.zone, offer.instance_type)


def family_of(instance_type: str) -> str:
    """Instance family for summaries: "p4d" (p4d.24xlarge), "n2-standard" (n2-standard-8),
    "Standard_NCads_A100_v4" (Standard_NC24ads_A100_v4)."""
    if "." in instance_type:
        return instance_type.split(".", 1)[0]
    if instance_type.startswith("Standard_"):
        parts = instance_type.split("_")
        if len(parts) > 1:
            parts[1] = re.sub(r"\d+", "", parts[1], count=1)
        return "_".join(parts)
    if "-" in instance_type:
        return instance_type.rsplit("-", 1)[0]
    return instance_type


@dataclass
class Shape:
    """Offers of one (accelerator count, vCPUs, memory, arch, general purpose or not),
    sorted by price per market."""

    accelerator_count: int
    cpus: float
    memory_gib: float
    ondemand: list[Offer] = field(default_factory=list)
    spot: list[Offer] = field(default_factory=list)
    arch: str = "x86_64"
    # Whether CPU-only requests may use these types without naming one (catalog_rules).
    general: bool = True


@dataclass
class FamilySummary:
    """What a (provider, family) offers, for explaining why a request excludes it."""

    provider: str
    family: str
    accelerator_name: str
    # (accelerator_count, cpus, memory_gib) -> [cheapest on-demand, cheapest spot (0: none)]
    shapes: dict[tuple[int, float, float], list[float]] = field(default_factory=dict)
    regions: set[str] = field(default_factory=set)
    zones: set[str] = field(default_factory=set)
    instance_types: set[str] = field(default_factory=set)
    # "aws p4d"; "gcp n1-standard + T4" where one family hosts several accelerators.
    label: str = ""
    arch: str = "x86_64"
    # catalog_rules category ("storage-optimized", ...); "" when the provider has no opinion.
    category: str = ""
    general: bool = True


class Catalog:
    """An immutable, indexed set of offers (see the module docstring)."""

    def __init__(self, offers: Iterable[Offer] = ()) -> None:
        self.offers: list[Offer] = list(offers)
        # (provider, region or "", ACCELERATOR or "") -> shapes, sorted by (count, cpus, memory, ...)
        self._groups: dict[tuple[str, str, str], list[Shape]] = {}
        self.families: list[FamilySummary] = []
        self.providers: dict[str, int] = {}
        self.accelerator_names: dict[str, str] = {}  # upper-case -> as the catalog spells it
        with gc_paused():
            self._build()

    def __len__(self) -> int:
        return len(self.offers)

    def _build(self) -> None:
        # Phase 1: one dict lookup per offer, into (provider, ACCEL, count, cpus, memory, arch,
        # general) buckets; the class of a type is looked up once per (provider, type, arch).
        buckets: dict[tuple[str, str, int, float, float, str, bool], list[Offer]] = {}
        upper: dict[str, str] = {}
        # An offer whose architecture its family contradicts (a loader that filled a missing
        # column with x86_64) is corrected here, so shapes and offers always agree.
        classes: dict[tuple[str, str, str], tuple[str, bool]] = {}
        for i, offer in enumerate(self.offers):
            type_key = (offer.provider, offer.instance_type, offer.arch)
            cls = classes.get(type_key)
            if cls is None:
                arch = catalog_rules.resolve_arch(offer.provider, offer.instance_type, offer.arch)
                cls = classes[type_key] = (arch, catalog_rules.is_general(offer.provider, offer.instance_type))
            if cls[0] != offer.arch:
                offer = self.offers[i] = replace(offer, arch=cls[0])
            name = offer.accelerator_name
            if offer.accelerator_count and name:
                accel = upper.get(name)
                if accel is None:
                    accel = upper[name] = name.upper()
                key = (offer.provider, accel, offer.accelerator_count, offer.cpus, offer.memory_gib, *cls)
            else:
                key = (offer.provider, "", 0, offer.cpus, offer.memory_gib, *cls)
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = [offer]
            else:
                bucket.append(offer)
        for name, accel in sorted(upper.items()):
            self.accelerator_names.setdefault(accel, name)
        # Phase 2: per bucket (a few thousand), sort once and derive regions and families.
        shapes: dict[tuple[str, str, str], dict[tuple[int, float, float, str, bool], Shape]] = {}
        families: dict[tuple[str, str, str, str, bool], FamilySummary] = {}
        providers: dict[str, int] = {}
        family_names: dict[str, str] = {}
        for (provider, accel, count, cpus, mem, arch, general), offers in buckets.items():
            shape_key = (count, cpus, mem, arch, general)
            offers.sort(key=ondemand_key)
            spot = sorted((o for o in offers if o.spot_price_per_hour > 0), key=spot_key)
            shapes.setdefault((provider, "", accel), {})[shape_key] = Shape(
                count, cpus, mem, offers, spot, arch, general
            )
            for market, listed in (("ondemand", offers), ("spot", spot)):
                for offer in listed:
                    group = shapes.setdefault((provider, offer.region, accel), {})
                    shape = group.get(shape_key)
                    if shape is None:
                        shape = group[shape_key] = Shape(count, cpus, mem, arch=arch, general=general)
                    getattr(shape, market).append(offer)
            providers[provider] = providers.get(provider, 0) + len(offers)
            by_type: dict[str, list[Offer]] = {}
            for offer in offers:
                by_type.setdefault(offer.instance_type, []).append(offer)
            for itype, typed in by_type.items():
                fam_name = family_names.get(itype)
                if fam_name is None:
                    fam_name = family_names[itype] = family_of(itype)
                fam = families.get((provider, fam_name, accel, arch, general))
                if fam is None:
                    fam = families[(provider, fam_name, accel, arch, general)] = FamilySummary(
                        provider,
                        fam_name,
                        typed[0].accelerator_name if accel else "",
                        arch=arch,
                        category=catalog_rules.category(provider, itype),
                        general=general,
                    )
                cheapest_spot = min((o.spot_price_per_hour for o in typed if o.spot_price_per_hour > 0), default=0.0)
                prices = fam.shapes.get(shape_key[:3])
                if prices is None:
                    fam.shapes[shape_key[:3]] = [typed[0].price_per_hour, cheapest_spot]
                else:
                    prices[0] = min(prices[0], typed[0].price_per_hour)
                    if cheapest_spot > 0 and (prices[1] <= 0 or cheapest_spot < prices[1]):
                        prices[1] = cheapest_spot
                fam.regions.update({o.region for o in typed})
                fam.zones.update({o.zone for o in typed if o.zone})
                fam.instance_types.add(itype)
        for group_key, group in shapes.items():
            self._groups[group_key] = [group[k] for k in sorted(group)]
        variants: dict[tuple[str, str], int] = {}
        for provider, fam_name, *_ in families:
            variants[(provider, fam_name)] = variants.get((provider, fam_name), 0) + 1
        for (provider, fam_name, *_), fam in families.items():
            shared = variants[(provider, fam_name)] > 1
            fam.label = f"{provider} {fam_name}" + (
                f" + {fam.accelerator_name}" if shared and fam.accelerator_name else ""
            )
        self.families = [families[k] for k in sorted(families)]
        self.providers = dict(sorted(providers.items()))

    def shapes(self, provider: str, region: str, accelerator: str) -> list[Shape]:
        """Shapes of a provider (in one region, or "" for all) with an accelerator ("" for none)."""
        return self._groups.get((provider, region, accelerator.upper()), [])

    def with_provider(self, provider: str, offers: Iterable[Offer]) -> Catalog:
        """A new catalog where ``provider``'s offers are replaced by ``offers``."""
        kept = [o for o in self.offers if o.provider != provider]
        return Catalog([*kept, *offers])

    def merged(self, overrides: dict[str, list[Offer]]) -> Catalog:
        """A new catalog where each provider in ``overrides`` has exactly the given offers."""
        kept = [o for o in self.offers if o.provider not in overrides]
        for offers in overrides.values():
            kept.extend(offers)
        return Catalog(kept)


# ---- the project's own catalog -----------------------------------------------------------


def builtin_offers() -> list[Offer]:
    """The project's own catalog (``data/builtin_offers.json``), expanded to offers.

    The file lists, per provider, regions (zones and a price factor relative to the
    provider's reference region) and instance types with their reference prices.
    """
    text = importlib_resources.files("styx.broker").joinpath("data/builtin_offers.json").read_text()
    return offers_from_builtin(json.loads(text))


def offers_from_builtin(data: dict) -> list[Offer]:
    """Expand the built-in catalog document (see ``builtin_offers``) into offers."""
    offers: list[Offer] = []
    for provider, spec in sorted(data["providers"].items()):
        columns = spec["columns"]
        for region, place in sorted(spec["regions"].items()):
            factor = float(place.get("price_factor", 1.0))
            for zone in place.get("zones") or [""]:
                for values in spec["types"]:
                    row = dict(zip(columns, values, strict=True))
                    count = int(row.get("accelerator_count", 0))
                    offers.append(
                        Offer(
                            provider=provider,
                            region=region,
                            zone=zone,
                            instance_type=row["instance_type"],
                            cpus=float(row["cpus"]),
                            memory_gib=float(row["memory_gib"]),
                            accelerator_name=row.get("accelerator_name", "") if count else "",
                            accelerator_count=count,
                            accelerator_memory_gib=float(row.get("accelerator_memory_gib", 0)),
                            price_per_hour=round(float(row["price"]) * factor, 4),
                            spot_price_per_hour=round(float(row.get("spot_price", 0)) * factor, 4),
                            arch=row.get("arch", "x86_64"),
                        )
                    )
    return offers
