"""The optimizer: rank the offers that can satisfy a request, cheapest first, and say why
the others cannot.

Matching rules (SkyPilot's, where the two meet):

- Catalog offers are instance types to create. ``cpus: 4`` asks for exactly 4 vCPUs,
  ``4+`` for at least 4; the default (no cpus given) accepts any size. Memory alike.
  Accelerator counts match exactly (``A100:8`` is an 8-GPU instance). CPU-only requests
  use CPU instance types only, so GPUs are not paid for by accident.
- Host offers (what the provisioner's plugins report for machines that already exist,
  e.g. the local host) are slices: at least the request, any GPU count that covers it.
- Catalog offers are x86_64 unless the request sets ``arch`` (x86 binaries do not run on
  ARM) or names an ``instance_type`` (which then brings its own architecture). Host offers
  (machines that exist) match any architecture unless ``arch`` is set.
- CPU-only requests that name no instance type use general-purpose families only
  (general-purpose, compute- and memory-optimized; each provider's catalog adapter says
  which, see ``styx.common.catalog_rules``): storage-optimized, HPC or special sizes are
  never picked by accident. Naming an instance type lifts this default.
- ``use_spot`` ranks by spot price and drops catalog offers without a spot market.
- The price of a choice is the hourly price x ``num_nodes``; ``max_hourly_cost`` caps it.
- ``any_of``: the cheapest offer among all alternatives; ``ordered``: the first
  alternative that has any feasible offer. An alternative inherits infra, use_spot and
  max_hourly_cost from the enclosing request when it leaves them unset.

Ties are broken by (provider, region, zone, instance type), so answers are deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from styx.broker.catalog import Catalog, FamilySummary, ondemand_key, order_key, spot_key
from styx.common.offers import Offer
from styx.common.resources import (
    DEFAULT_ARCH,
    DEFAULT_TASK_CPUS,
    Resources,
    gpu_matches,
    infra_parts,
    normalize_arch,
)

_EPS = 1e-6
DEFAULT_LIMIT = 10
MAX_REJECTIONS = 30
# Explanation stage of the defaults (architecture, general-purpose families); a family they
# exclude that is cheaper than the chosen offer is reported with this prefix, so a dryrun
# can say what the defaults passed over.
DEFAULT_STAGE = 7
SKIPPED_BY_DEFAULT = "skipped by default: "


@dataclass(frozen=True)
class Ranked:
    """One feasible offer with its price in the chosen market."""

    offer: Offer
    hourly_price: float  # one node
    total_hourly_price: float  # x num_nodes
    spot: bool
    alternative: int = 0  # index in any_of / ordered; 0 when the request has none
    enabled: bool = True  # False only when disabled providers were asked for (what-if)


@dataclass(frozen=True)
class Rejection:
    """Why a family of offers (or a whole provider) cannot serve the request."""

    family: str
    reason: str


@dataclass
class Ranking:
    """The optimizer's answer: feasible offers cheapest first, and the exclusions."""

    offers: list[Ranked] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def alternatives(res: Resources) -> tuple[str, list[Resources]]:
    """("single"|"any_of"|"ordered", resource sets), inheriting unset fields from ``res``."""
    if res.any_of:
        mode, alts = "any_of", res.any_of
    elif res.ordered:
        mode, alts = "ordered", res.ordered
    else:
        return "single", [res]
    out = []
    for alt in alts:
        out.append(
            replace(
                alt,
                infra=alt.infra or res.infra,
                use_spot=alt.use_spot or res.use_spot,
                max_hourly_cost=alt.max_hourly_cost or res.max_hourly_cost,
                cluster=res.cluster,
                arch=alt.arch or res.arch,
                any_of=(),
                ordered=(),
            )
        )
    return mode, out


def _cpus_exact(res: Resources) -> bool:
    # The scheduler fills an unset cpus with the 0.5 default: that means "any size".
    return not res.cpus_at_least and res.cpus > DEFAULT_TASK_CPUS + _EPS


def wanted_arch(res: Resources) -> str:
    """The architecture catalog offers must have: the request's, else x86_64 unless it names
    an instance type ("": any, the named type's own)."""
    if res.arch:
        return normalize_arch(res.arch)
    return "" if res.instance_type else DEFAULT_ARCH


def general_only(res: Resources) -> bool:
    """Whether only general-purpose families may serve ``res`` (CPU-only, no type named)."""
    return not res.accelerators and not res.instance_type


def _amount_ok(have: float, want: float, exact: bool) -> bool:
    if exact:
        return abs(have - want) <= _EPS * max(1.0, want)
    return have + _EPS >= want


def host_offer_fits(offer: Offer, res: Resources) -> bool:
    """Whether one instance of a host offer (a slice of an existing machine) holds the request."""
    want_p, want_r, want_z = infra_parts(res.infra)
    if (
        (want_p and want_p != offer.provider)
        or (want_r and want_r != offer.region)
        or (want_z and want_z != offer.zone)
    ):
        return False
    if res.instance_type and res.instance_type != offer.instance_type:
        return False
    if res.arch and normalize_arch(offer.arch) != normalize_arch(res.arch):
        return False
    if offer.cpus + _EPS < res.cpus or offer.memory_gib + _EPS < res.memory_gib:
        return False
    if not res.accelerators:
        return True
    return any(
        offer.accelerator_count >= a.count and gpu_matches(offer.accelerator_name, a.name) for a in res.accelerators
    )


def rank(
    catalog: Catalog,
    res: Resources,
    num_nodes: int = 1,
    max_hourly_cost: float = 0.0,
    enabled: Mapping[str, str] | None = None,
    host_offers: Sequence[Offer] = (),
    limit: int = DEFAULT_LIMIT,
    explain: bool = True,
    include_disabled: bool = False,
) -> Ranking:
    """Feasible offers cheapest first (at most ``limit``), plus why the rest were excluded.

    ``enabled`` maps provider -> "" when enabled or the reason it is disabled; None means
    every provider is enabled. Catalog providers missing from it are disabled (no plugin).
    ``host_offers`` are matched as slices (see the module docstring).
    ``max_hourly_cost`` (when > 0) caps the total price, like the request's own field.
    """
    num_nodes = max(1, num_nodes)
    mode, alts = alternatives(res)
    ranking = Ranking()
    merged: list[Ranked] = []
    for index, alt in enumerate(alts):
        cap = min(c for c in (alt.max_hourly_cost, max_hourly_cost, float("inf")) if c > 0)
        found = _rank_one(catalog, alt, num_nodes, cap, enabled, host_offers, limit, include_disabled)
        found = [replace(r, alternative=index) for r in found] if index else found
        if explain:
            prefix = f"alternative {index}: " if mode != "single" else ""
            best = found[0].total_hourly_price if found else 0.0  # 0: nothing chosen, nothing passed over
            for rej in _explain(catalog, alt, num_nodes, cap, enabled, host_offers, include_disabled, best):
                ranking.rejections.append(Rejection(rej.family, prefix + rej.reason) if prefix else rej)
        if mode == "ordered" and found:
            merged = found
            break
        merged.extend(found)
    if mode == "any_of":
        seen: set[tuple[tuple[str, str, str, str], bool]] = set()
        unique = []
        for r in sorted(merged, key=lambda r: (r.total_hourly_price, order_key(r.offer), r.alternative)):
            key = (order_key(r.offer), r.spot)
            if key not in seen:
                seen.add(key)
                unique.append(r)
        merged = unique
    ranking.offers = merged[:limit]
    return ranking


def _provider_state(provider: str, enabled: Mapping[str, str] | None) -> str:
    """ "" when enabled, else why not."""
    if enabled is None:
        return ""
    if provider not in enabled:
        return "no provider plugin loaded by the provisioner"
    return enabled[provider]


def _rank_one(
    catalog: Catalog,
    res: Resources,
    num_nodes: int,
    cap: float,
    enabled: Mapping[str, str] | None,
    host_offers: Sequence[Offer],
    limit: int,
    include_disabled: bool,
) -> list[Ranked]:
    want_p, want_r, want_z = infra_parts(res.infra)
    spot = res.use_spot
    exact_cpus = _cpus_exact(res)
    exact_mem = res.memory_gib > 0 and not res.memory_at_least
    arch, general = wanted_arch(res), general_only(res)
    lists: list[list[Offer]] = []
    disabled: set[str] = set()
    for provider in catalog.providers:
        if want_p and provider != want_p:
            continue
        if _provider_state(provider, enabled):
            if not include_disabled:
                continue
            disabled.add(provider)
        for accel in res.accelerators or (None,):
            for shape in catalog.shapes(provider, want_r, accel.name if accel else ""):
                if accel is not None and shape.accelerator_count != accel.count:
                    continue
                if (arch and shape.arch != arch) or (general and not shape.general):
                    continue
                if not _amount_ok(shape.cpus, res.cpus, exact_cpus):
                    continue
                if res.memory_gib > 0 and not _amount_ok(shape.memory_gib, res.memory_gib, exact_mem):
                    continue
                offers = shape.spot if spot else shape.ondemand
                if offers:
                    lists.append(offers)
    out: list[Ranked] = []
    key = spot_key if spot else ondemand_key
    stream: Iterable[Offer] = lists[0] if len(lists) == 1 else heapq.merge(*lists, key=key)
    for offer in stream:
        price = offer.spot_price_per_hour if spot else offer.price_per_hour
        if price * num_nodes > cap + _EPS:
            break  # every later offer costs more
        if want_z and offer.zone != want_z:
            continue
        if res.instance_type and offer.instance_type != res.instance_type:
            continue
        out.append(Ranked(offer, price, price * num_nodes, spot, enabled=offer.provider not in disabled))
        if len(out) >= limit:
            break
    hosts = []
    for offer in host_offers:
        if offer.provider in catalog.providers or not host_offer_fits(offer, res):
            continue
        if _provider_state(offer.provider, enabled) and not include_disabled:
            continue
        price = offer.hourly_price(spot)
        if price * num_nodes > cap + _EPS:
            continue
        hosts.append(
            Ranked(offer, price, price * num_nodes, spot, enabled=not _provider_state(offer.provider, enabled))
        )
    if hosts:
        out = sorted([*out, *hosts], key=lambda r: (r.total_hourly_price, order_key(r.offer)))[:limit]
    return out


# ---- explanations -------------------------------------------------------------------------


def _fmt(values: Iterable[float]) -> str:
    vals = sorted(set(values))
    if len(vals) > 6:
        return f"{vals[0]:g}-{vals[-1]:g}"
    return ", ".join(f"{v:g}" for v in vals)


def describe_request(res: Resources) -> str:
    """A short human description: "exactly 4 vCPUs, at least 16 GiB, A100:8 (spot)"."""
    parts = []
    if res.cpus > DEFAULT_TASK_CPUS + _EPS or res.cpus_at_least:
        parts.append(f"{'exactly' if _cpus_exact(res) else 'at least'} {res.cpus:g} vCPUs")
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
    exact_cpus = _cpus_exact(res)
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
    by_cpus = [(k, v) for k, v in shapes if _amount_ok(k[1], res.cpus, exact_cpus)]
    if not by_cpus:
        how = "exactly" if exact_cpus else "at least"
        return 2, f"{_fmt(k[1] for k, _ in shapes)} vCPUs, request wants {how} {res.cpus:g}"
    by_mem = [(k, v) for k, v in by_cpus if res.memory_gib <= 0 or _amount_ok(k[2], res.memory_gib, exact_mem)]
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
    exact_cpus = _cpus_exact(res)
    exact_mem = res.memory_gib > 0 and not res.memory_at_least
    prices = [
        v[1] if res.use_spot else v[0]
        for k, v in fam.shapes.items()
        if _amount_ok(k[1], res.cpus, exact_cpus)
        and (res.memory_gib <= 0 or _amount_ok(k[2], res.memory_gib, exact_mem))
        and (not res.use_spot or v[1] > 0)
    ]
    return min(prices, default=float("inf"))


def _explain(
    catalog: Catalog,
    res: Resources,
    num_nodes: int,
    cap: float,
    enabled: Mapping[str, str] | None,
    host_offers: Sequence[Offer],
    include_disabled: bool,
    best: float = 0.0,
) -> list[Rejection]:
    want_p, want_r, want_z = infra_parts(res.infra)
    provider_level: list[Rejection] = []
    ranked: list[tuple[int, float, str, Rejection]] = []
    skip_cpu_families_for_gpu = bool(res.accelerators)
    for provider in catalog.providers:
        if want_p and provider != want_p:
            provider_level.append(Rejection(provider, f"excluded by infra {res.infra}"))
            continue
        why = _provider_state(provider, enabled)
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
