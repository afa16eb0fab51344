"""Why offers cannot serve a request: per provider, per instance family and per host offer,
closest misses first, in words a user can act on (``sky launch --dryrun`` prints them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from styx.broker.catalog import Catalog, FamilySummary
from styx.broker.offer_match import (
    EPS,
    amount_ok,
    cpus_exact,
    general_only,
    host_offer_fits,
    provider_state,
    wanted_arch,
)
from styx.common.offers import Offer
from styx.common.resources import DEFAULT_ARCH, DEFAULT_TASK_CPUS, Resources, infra_parts, normalize_arch

_EPS = EPS
MAX_REJECTIONS = 30
# Explanation stage of the defaults (architecture, general-purpose families); a family they
# exclude that is cheaper than the chosen offer is reported with this prefix, so a dryrun
# can say what the defaults passed over.
DEFAULT_STAGE = 7
SKIPPED_BY_DEFAULT = "skipped by default: "


@dataclass(frozen=True)
class Rejection:
    """Why a family of offers (or a whole provider) cannot serve the request."""

    family: str
    reason: str


def _fmt(values: Iterable[float]) -> str:
    vals = sorted(set(values))
    if len(vals) > 6:
        return f"{vals[0]:g}-{vals[-1]:g}"
    return ", ".join(f"{v:g}" for v in vals)


def describe_request(res: Resources) -> str:
    """A short human description: "exactly 4 vCPUs, at least 16 GiB, A100:8 (spot)"."""
    parts = []
    if res.cpus > DEFAULT_TASK_CPUS + _EPS or res.cpus_at_least:
        parts.append(f"{'exactly' if cpus_exact(res) else 'at least'} {res.cpus:g} vCPUs")
    if res.memory_gib > 0:
        parts.append(f"{'at least' if res.memory_at_least else 'exactly'} {res.memory_gib:g} GiB")
    if res.accelerators:
        parts.append(" or ".join(f"{a.name}:{a.count}" for a in res.accelerators))
    if res.instance_type:
        parts.append(res.instance_type)
    if res.infra:
        parts.append(f"in {res.infra}")
    if res.arch:
        parts.append(normalize_arch(res.arch))
    if res.use_spot:
        parts.append("spot")
    return ", ".join(parts) or "any size"


def _family_reason(
    fam: FamilySummary, res: Resources, num_nodes: int, cap: float, want_r: str, want_z: str
) -> tuple[int, str] | None:
    """(stage reached, reason) when the family cannot serve ``res``; None when it can."""
    exact_cpus = cpus_exact(res)
    exact_mem = res.memory_gib > 0 and not res.memory_at_least
    accel_upper = fam.accelerator_name.upper()
    wants = [a for a in res.accelerators if a.name.upper() == accel_upper] if res.accelerators else []
    if res.accelerators and not wants:
        offered = _fmt(k[0] for k in fam.shapes)
        have = f"{offered}x {fam.accelerator_name}" if fam.accelerator_name else "no GPU"
        want = " or ".join(f"{a.name}:{a.count}" for a in res.accelerators)
        return 0, f"{have}, request wants {want}"
    if not res.accelerators and fam.accelerator_name:
        return 0, "has GPUs; CPU-only requests use CPU instance types"
    counts = {a.count for a in wants}
    shapes = [(k, v) for k, v in fam.shapes.items() if not wants or k[0] in counts]
    if not shapes:
        return 1, (
            f"{_fmt(k[0] for k in fam.shapes)}x {fam.accelerator_name} per instance, "
            f"request wants {fam.accelerator_name}:{_fmt(counts)}"
        )
    by_cpus = [(k, v) for k, v in shapes if amount_ok(k[1], res.cpus, exact_cpus)]
    if not by_cpus:
        how = "exactly" if exact_cpus else "at least"
        return 2, f"{_fmt(k[1] for k, _ in shapes)} vCPUs, request wants {how} {res.cpus:g}"
    by_mem = [(k, v) for k, v in by_cpus if res.memory_gib <= 0 or amount_ok(k[2], res.memory_gib, exact_mem)]
    if not by_mem:
        how = "exactly" if exact_mem else "at least"
        return 3, f"{_fmt(k[2] for k, _ in by_cpus)} GiB memory at that size, request wants {how} {res.memory_gib:g}"
    if res.use_spot:
        by_mem = [(k, v) for k, v in by_mem if v[1] > 0]
        if not by_mem:
            return 4, "no spot market"
    if want_r and want_r not in fam.regions:
        return 5, f"not offered in region {want_r}"
    if want_z and want_z not in fam.zones:
        return 5, f"not offered in zone {want_z}"
    if res.instance_type and res.instance_type not in fam.instance_types:
        return 6, f"no instance type {res.instance_type}"
    cheapest = min(v[1] if res.use_spot else v[0] for _, v in by_mem)
    arch = wanted_arch(res)
    if arch and fam.arch != arch:
        how = "" if res.arch else " (the default; set arch: arm64 to use ARM)" if arch == DEFAULT_ARCH else ""
        return DEFAULT_STAGE, f"{fam.arch} instances, request wants {arch}{how}"
    if general_only(res) and not fam.general:
        return DEFAULT_STAGE, (
            f"{fam.category or 'not a general-purpose'} family; CPU-only requests use general-purpose, "
            "compute- or memory-optimized families unless instance_type names one"
        )
    if cheapest * num_nodes > cap + _EPS:
        nodes = f" x {num_nodes} nodes" if num_nodes > 1 else ""
        return 8, f"cheapest {cheapest:.2f} $/h{nodes}, over max_hourly_cost {cap:.2f} $/h"
    return None


def _cheapest_fit(fam: FamilySummary, res: Resources) -> float:
    """The family's cheapest price (in the request's market) among shapes that fit ``res``."""
    exact_cpus = cpus_exact(res)
    exact_mem = res.memory_gib > 0 and not res.memory_at_least
    prices = [
        v[1] if res.use_spot else v[0]
        for k, v in fam.shapes.items()
        if amount_ok(k[1], res.cpus, exact_cpus)
        and (res.memory_gib <= 0 or amount_ok(k[2], res.memory_gib, exact_mem))
        and (not res.use_spot or v[1] > 0)
    ]
    return min(prices, default=float("inf"))


def rejections_for(
    catalog: Catalog,
    res: Resources,
    num_nodes: int,
    cap: float,
    enabled: Mapping[str, str] | None,
    host_offers: Sequence[Offer],
    include_disabled: bool,
    best: float = 0.0,
) -> list[Rejection]:
    """Why providers, families and host offers cannot serve ``res`` (one resource set),
    closest misses first. ``best``: total price of the chosen offer (0: none); families the
    defaults excluded that are cheaper than it are marked ``SKIPPED_BY_DEFAULT``."""
    want_p, want_r, want_z = infra_parts(res.infra)
    provider_level: list[Rejection] = []
    ranked: list[tuple[int, float, str, Rejection]] = []
    skip_cpu_families_for_gpu = bool(res.accelerators)
    for provider in catalog.providers:
        if want_p and provider != want_p:
            provider_level.append(Rejection(provider, f"excluded by infra {res.infra}"))
            continue
        why = provider_state(provider, enabled)
        if why and not include_disabled:
            provider_level.append(Rejection(provider, f"provider disabled ({why})"))
            continue
        if res.accelerators and not any(catalog.shapes(provider, "", a.name) for a in res.accelerators):
            names = sorted(
                {f.accelerator_name for f in catalog.families if f.provider == provider and f.accelerator_name}
            )
            want = " or ".join(a.name for a in res.accelerators)
            provider_level.append(
                Rejection(provider, f"no {want} offers; accelerators here: {', '.join(names) or 'none'}")
            )
            continue
    relevant = {r.family for r in provider_level}
    for fam in catalog.families:
        if fam.provider in relevant or (want_p and fam.provider != want_p):
            continue
        if skip_cpu_families_for_gpu and not fam.accelerator_name:
            continue  # a CPU family is no answer to a GPU request; listing them all is noise
        if not res.accelerators and fam.accelerator_name:
            continue  # likewise GPU families for CPU-only requests
        if res.instance_type and res.instance_type not in fam.instance_types:
            continue
        found = _family_reason(fam, res, num_nodes, cap, want_r, want_z)
        if found is not None:
            stage, reason = found
            cheapest = min(v[0] for v in fam.shapes.values())
            if stage == DEFAULT_STAGE and _cheapest_fit(fam, res) * num_nodes < best - _EPS:
                reason = SKIPPED_BY_DEFAULT + reason
            ranked.append((-stage, cheapest, fam.label, Rejection(fam.label, reason)))
    ranked.sort(key=lambda t: t[:3])
    families = [t[3] for t in ranked]
    if len(families) > MAX_REJECTIONS:
        extra = len(families) - MAX_REJECTIONS
        families = [*families[:MAX_REJECTIONS], Rejection("...", f"and {extra} more families")]
    hosts = []
    for offer in host_offers:
        if offer.provider in catalog.providers or host_offer_fits(offer, res):
            continue
        gpu = f"{offer.accelerator_count}x {offer.accelerator_name}" if offer.accelerator_count else "no GPU"
        arch = f", {normalize_arch(offer.arch)} (request wants {normalize_arch(res.arch)})" if res.arch else ""
        hosts.append(Rejection(offer.place, f"has {offer.cpus:g} CPUs, {offer.memory_gib:.1f} GiB, {gpu}{arch}"))
    pinned = res.instance_type
    if (
        pinned
        and not any(pinned in f.instance_types for f in catalog.families)
        and not any(o.instance_type == pinned for o in host_offers)
    ):
        provider_level.append(Rejection("*", f"no offer has instance type {pinned}"))
    return [*provider_level, *families, *hosts]
