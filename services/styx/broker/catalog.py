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

Loaders: ``load_skypilot_csv`` / ``load_skypilot_dir`` read SkyPilot's v8 ``vms.csv``
files (columns by header name, GCP's per-GPU accelerator rows attached to their host VM
families), ``builtin_offers`` reads the project's own catalog (``data/builtin_offers.json``).
"""

from __future__ import annotations

import csv
import gc
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from importlib import resources as importlib_resources
from pathlib import Path

from styx.common.errors import InvalidArgument
from styx.common.offers import Offer

_GIB_PER_MIB = 1 / 1024
_OFFER_FIELDS = tuple(f.name for f in fields(Offer))


def make_offer(values: Sequence[object]) -> Offer:
    """Build an Offer from its field values in declaration order, fast.

    Offer is a frozen dataclass whose generated ``__init__`` sets each of its 13 fields
    through ``object.__setattr__``; filling ``__dict__`` directly gives an equal object in
    a third of the time, which matters when loading ~100k offers.
    """
    offer = object.__new__(Offer)
    offer.__dict__.update(zip(_OFFER_FIELDS, values, strict=True))
    return offer


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic structures.

    Loading creates about a million objects and no reference cycles; without the pause the
    collector repeatedly walks the growing heap, which costs a third of the load time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    """Offers of one (accelerator count, vCPUs, memory), sorted by price per market."""

    accelerator_count: int
    cpus: float
    memory_gib: float
    ondemand: list[Offer] = field(default_factory=list)
    spot: list[Offer] = field(default_factory=list)


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


@dataclass(frozen=True)
class LoadStats:
    """What a loader read and what it skipped (with why), for import reports."""

    offers: int
    skipped: dict[str, int]


class Catalog:
    """An immutable, indexed set of offers (see the module docstring)."""

    def __init__(self, offers: Iterable[Offer] = ()) -> None:
        self.offers: list[Offer] = list(offers)
        # (provider, region or "", ACCELERATOR or "") -> shapes, sorted by (count, cpus, memory)
        self._groups: dict[tuple[str, str, str], list[Shape]] = {}
        self.families: list[FamilySummary] = []
        self.providers: dict[str, int] = {}
        self.accelerator_names: dict[str, str] = {}  # upper-case -> as the catalog spells it
        with gc_paused():
            self._build()

    def __len__(self) -> int:
        return len(self.offers)

    def _build(self) -> None:
        # Phase 1: one dict lookup per offer, into (provider, ACCEL, count, cpus, memory) buckets.
        buckets: dict[tuple[str, str, int, float, float], list[Offer]] = {}
        upper: dict[str, str] = {}
        for offer in self.offers:
            name = offer.accelerator_name
            if offer.accelerator_count and name:
                accel = upper.get(name)
                if accel is None:
                    accel = upper[name] = name.upper()
                key = (offer.provider, accel, offer.accelerator_count, offer.cpus, offer.memory_gib)
            else:
                key = (offer.provider, "", 0, offer.cpus, offer.memory_gib)
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = [offer]
            else:
                bucket.append(offer)
        for name, accel in sorted(upper.items()):
            self.accelerator_names.setdefault(accel, name)
        # Phase 2: per bucket (a few thousand), sort once and derive regions and families.
        shapes: dict[tuple[str, str, str], dict[tuple[int, float, float], Shape]] = {}
        families: dict[tuple[str, str, str], FamilySummary] = {}
        providers: dict[str, int] = {}
        family_names: dict[str, str] = {}
        for (provider, accel, count, cpus, mem), offers in buckets.items():
            shape_key = (count, cpus, mem)
            offers.sort(key=ondemand_key)
            spot = sorted((o for o in offers if o.spot_price_per_hour > 0), key=spot_key)
            shapes.setdefault((provider, "", accel), {})[shape_key] = Shape(count, cpus, mem, offers, spot)
            for market, listed in (("ondemand", offers), ("spot", spot)):
                for offer in listed:
                    group = shapes.setdefault((provider, offer.region, accel), {})
                    shape = group.get(shape_key)
                    if shape is None:
                        shape = group[shape_key] = Shape(count, cpus, mem)
                    getattr(shape, market).append(offer)
            providers[provider] = providers.get(provider, 0) + len(offers)
            by_type: dict[str, list[Offer]] = {}
            for offer in offers:
                by_type.setdefault(offer.instance_type, []).append(offer)
            for itype, typed in by_type.items():
                fam_name = family_names.get(itype)
                if fam_name is None:
                    fam_name = family_names[itype] = family_of(itype)
                fam = families.get((provider, fam_name, accel))
                if fam is None:
                    fam = families[(provider, fam_name, accel)] = FamilySummary(
                        provider, fam_name, typed[0].accelerator_name if accel else ""
                    )
                cheapest_spot = min((o.spot_price_per_hour for o in typed if o.spot_price_per_hour > 0), default=0.0)
                prices = fam.shapes.get(shape_key)
                if prices is None:
                    fam.shapes[shape_key] = [typed[0].price_per_hour, cheapest_spot]
                else:
                    prices[0] = min(prices[0], typed[0].price_per_hour)
                    if cheapest_spot > 0 and (prices[1] <= 0 or cheapest_spot < prices[1]):
                        prices[1] = cheapest_spot
                fam.regions.update({o.region for o in typed})
                fam.zones.update({o.zone for o in typed if o.zone})
                fam.instance_types.add(itype)
        for key, group in shapes.items():
            self._groups[key] = [group[k] for k in sorted(group)]
        variants: dict[tuple[str, str], int] = {}
        for provider, fam_name, _ in families:
            variants[(provider, fam_name)] = variants.get((provider, fam_name), 0) + 1
        for (provider, fam_name, _), fam in families.items():
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


# ---- loaders -----------------------------------------------------------------------------

# GCP sells these GPUs only on dedicated machine families: accelerator rows of the catalog
# are priced per GPU count and attach to the host type named here (price = host + GPUs).
_GCP_DEDICATED_HOSTS: dict[str, dict[int, tuple[str, ...]]] = {
    "A100": {1: ("a2-highgpu-1g",), 2: ("a2-highgpu-2g",), 4: ("a2-highgpu-4g",), 8: ("a2-highgpu-8g",),
             16: ("a2-megagpu-16g",)},
    "A100-80GB": {1: ("a2-ultragpu-1g",), 2: ("a2-ultragpu-2g",), 4: ("a2-ultragpu-4g",), 8: ("a2-ultragpu-8g",)},
    "H100": {1: ("a3-highgpu-1g",), 2: ("a3-highgpu-2g",), 4: ("a3-highgpu-4g",), 8: ("a3-highgpu-8g",)},
    "H100-MEGA": {8: ("a3-megagpu-8g",)},
    "H200": {8: ("a3-ultragpu-8g",)},
    "B200": {8: ("a4-highgpu-8g",)},
    "L4": {1: ("g2-standard-4", "g2-standard-8", "g2-standard-12", "g2-standard-16", "g2-standard-32"),
           2: ("g2-standard-24",), 4: ("g2-standard-48",), 8: ("g2-standard-96",)},
}  # fmt: skip
# GPUs attachable to general-purpose N1 VMs: count -> (max vCPUs, max memory GiB) of the host,
# per GCP's GPU platform limits.
_GCP_N1_GPU_LIMITS: dict[str, dict[int, tuple[float, float]]] = {
    "T4": {1: (48, 312), 2: (48, 312), 4: (96, 624)},
    "P4": {1: (24, 156), 2: (48, 312), 4: (96, 624)},
    "V100": {1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
    "P100": {1: (16, 104), 2: (32, 208), 4: (96, 624)},
    "K80": {1: (8, 52), 2: (16, 104), 4: (32, 208), 8: (64, 416)},
}
_GCP_N1_HOST = re.compile(r"^n1-(standard|highmem|highcpu)-\d+$")
# Families that GCP only sells with their GPUs attached (never as CPU-only VMs).
_GCP_GPU_ONLY_FAMILIES = ("a2-", "a3-", "a4-", "g2-")
_MIB = re.compile(r"SizeInMiB'?\"?\s*:\s*(\d+)")


def _num(text: str) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


def _gpu_memory_gib(info: str) -> float:
    match = _MIB.search(info) if info else None
    return round(int(match.group(1)) * _GIB_PER_MIB, 3) if match else 0.0


def load_skypilot_csv(provider: str, path: Path | str) -> tuple[list[Offer], LoadStats]:
    """Read one SkyPilot v8 ``vms.csv`` of ``provider`` (aws, gcp, azure, ...) into offers.

    Columns are read by header name (their order differs by cloud). Rows without an
    on-demand price, with fractional GPUs, or (GCP) TPUs and accelerators with no known
    host family are skipped and counted. AWS zones stay as the file spells them (zone ids
    such as use1-az1); Azure offers are region-wide.
    """
    provider = provider.strip().lower()
    if not provider:
        raise InvalidArgument("provider: required, e.g. aws")
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    intern = sys.intern
    offers: list[Offer] = []
    gcp_accels: list[tuple[str, int, str, str, float, float, float]] = []
    gcp_hosts: dict[tuple[str, str], tuple[float, float, float, float]] = {}
    gcp_n1_by_zone: dict[str, list[tuple[str, float, float, float, float]]] = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return [], LoadStats(0, {})
        col = {name.strip(): i for i, name in enumerate(header)}
        missing = [c for c in ("InstanceType", "vCPUs", "MemoryGiB", "Price", "Region") if c not in col]
        if missing:
            raise InvalidArgument(f"{path}: not a SkyPilot v8 vms.csv, missing columns {missing}")
        i_type, i_cpus, i_mem, i_price, i_region = (
            col["InstanceType"], col["vCPUs"], col["MemoryGiB"], col["Price"], col["Region"]
        )  # fmt: skip
        i_spot = col.get("SpotPrice", -1)
        i_acc, i_cnt, i_info = col.get("AcceleratorName", -1), col.get("AcceleratorCount", -1), col.get("GpuInfo", -1)
        i_zone, i_arch = col.get("AvailabilityZone", -1), col.get("Arch", -1)
        width = len(header)
        is_gcp = provider == "gcp"
        for row in reader:
            if len(row) < width:
                skip("short row")
                continue
            itype = row[i_type].strip()
            text = row[i_price]
            price = _num(text) if text else 0.0
            text = row[i_spot] if i_spot >= 0 else ""
            spot = _num(text) if text else 0.0
            region = intern(row[i_region].strip())
            zone = intern(row[i_zone].strip()) if i_zone >= 0 else ""
            acc = row[i_acc].strip() if i_acc >= 0 else ""
            count_f = _num(row[i_cnt]) if acc and i_cnt >= 0 else 0.0
            if is_gcp and not itype:
                if not acc or acc.lower().startswith("tpu"):
                    skip("TPU (not supported)")
                    continue
                gpu_mem = _gpu_memory_gib(row[i_info]) if i_info >= 0 else 0.0
                gcp_accels.append((acc, int(count_f), region, zone, price, spot, gpu_mem))
                continue
            if price <= 0:
                skip("no on-demand price")
                continue
            cpus, mem = _num(row[i_cpus]), _num(row[i_mem])
            if is_gcp and not acc:
                gcp_hosts[(itype, zone)] = (cpus, mem, price, spot)
                if _GCP_N1_HOST.match(itype):
                    gcp_n1_by_zone.setdefault(zone, []).append((itype, cpus, mem, price, spot))
                if itype.startswith(_GCP_GPU_ONLY_FAMILIES) or itype.endswith("-tpu"):
                    continue  # offered below with its GPUs only
            if acc and count_f and count_f != int(count_f):
                skip("fractional GPU")
                continue
            count = int(count_f) if acc else 0
            gpu_mem = _gpu_memory_gib(row[i_info]) if acc and i_info >= 0 else 0.0
            arch = row[i_arch].strip() if i_arch >= 0 and row[i_arch].strip() else "x86_64"
            offers.append(
                make_offer(
                    (
                        provider,
                        region,
                        zone,
                        intern(itype),
                        cpus,
                        mem,
                        intern(acc) if count else "",
                        count,
                        gpu_mem,
                        price,
                        spot,
                        intern(arch),
                        0,
                    )
                )
            )
    if is_gcp:
        offers.extend(_attach_gcp_accelerators(gcp_accels, gcp_hosts, gcp_n1_by_zone, skip))
    return offers, LoadStats(len(offers), skipped)


def _attach_gcp_accelerators(
    accels: list[tuple[str, int, str, str, float, float, float]],
    hosts: dict[tuple[str, str], tuple[float, float, float, float]],
    n1_by_zone: dict[str, list[tuple[str, float, float, float, float]]],
    skip: object,
) -> Iterator[Offer]:
    """GCP accelerator rows x host VMs in the same zone: price = host + GPUs, per market."""
    assert callable(skip)
    for name, count, region, zone, gpu_price, gpu_spot, gpu_mem in accels:
        dedicated = _GCP_DEDICATED_HOSTS.get(name.upper(), {})
        limits = _GCP_N1_GPU_LIMITS.get(name.upper(), {})
        candidates: list[tuple[str, float, float, float, float]] = []
        if name.upper() in _GCP_DEDICATED_HOSTS:
            for host in dedicated.get(count, ()):
                spec = hosts.get((host, zone))
                if spec is not None:
                    candidates.append((host, *spec))
        elif count in limits:
            max_cpus, max_mem = limits[count]
            candidates = [h for h in n1_by_zone.get(zone, ()) if h[1] <= max_cpus and h[2] <= max_mem]
        else:
            skip(f"no host family for {name}:{count}")
            continue
        if not candidates:
            skip("accelerator without a host VM in its zone")
            continue
        for host, cpus, mem, host_price, host_spot in candidates:
            spot = round(host_spot + gpu_spot, 6) if host_spot > 0 and gpu_spot > 0 else 0.0
            yield Offer(
                "gcp", region, zone, host, cpus, mem, name, count, gpu_mem, round(host_price + gpu_price, 6), spot
            )


def load_skypilot_dir(root: Path | str, providers: Iterable[str] = ()) -> tuple[dict[str, list[Offer]], LoadStats]:
    """Read ``<root>/<provider>/vms.csv`` for every provider directory (or the given ones)."""
    base = Path(root)
    wanted = [p.lower() for p in providers] or sorted(
        d.name for d in base.iterdir() if d.is_dir() and (d / "vms.csv").is_file()
    )
    if not wanted:
        raise InvalidArgument(f"{base}: no <provider>/vms.csv files found (SkyPilot v8 catalog layout)")
    result: dict[str, list[Offer]] = {}
    skipped: dict[str, int] = {}
    for provider in wanted:
        path = base / provider / "vms.csv"
        if not path.is_file():
            raise InvalidArgument(f"{path}: not found")
        with gc_paused():
            offers, stats = load_skypilot_csv(provider, path)
        result[provider] = offers
        for why, n in stats.skipped.items():
            skipped[f"{provider}: {why}"] = n
    return result, LoadStats(sum(len(v) for v in result.values()), skipped)


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
