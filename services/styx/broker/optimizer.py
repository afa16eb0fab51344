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

from styx.broker.catalog import Catalog, ondemand_key, order_key, spot_key
from styx.broker.explain import SKIPPED_BY_DEFAULT, Rejection, describe_request, rejections_for
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
from styx.common.resources import Resources, infra_parts

# Re-exported: callers import these from the optimizer.
__all__ = [
    "SKIPPED_BY_DEFAULT",
    "Ranked",
    "Ranking",
    "Rejection",
    "alternatives",
    "describe_request",
    "general_only",
    "host_offer_fits",
    "rank",
    "wanted_arch",
]
_EPS = EPS

DEFAULT_LIMIT = 10


@dataclass(frozen=True)
class Ranked:
    """One feasible offer with its price in the chosen market."""

    offer: Offer
    hourly_price: float  # one node
    total_hourly_price: float  # x num_nodes
    spot: bool
    alternative: int = 0  # index in any_of / ordered; 0 when the request has none
    enabled: bool = True  # False only when disabled providers were asked for (what-if)


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
                image_id=alt.image_id or res.image_id,
                any_of=(),
                ordered=(),
            )
        )
    return mode, out


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
            for rej in rejections_for(catalog, alt, num_nodes, cap, enabled, host_offers, include_disabled, best):
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
    exact_cpus = cpus_exact(res)
    exact_mem = res.memory_gib > 0 and not res.memory_at_least
    arch, general = wanted_arch(res), general_only(res)
    lists: list[list[Offer]] = []
    disabled: set[str] = set()
    for provider in catalog.providers:
        if want_p and provider != want_p:
            continue
        if provider_state(provider, enabled):
            if not include_disabled:
                continue
            disabled.add(provider)
        for accel in res.accelerators or (None,):
            for shape in catalog.shapes(provider, want_r, accel.name if accel else ""):
                if accel is not None and shape.accelerator_count != accel.count:
                    continue
                if (arch and shape.arch != arch) or (general and not shape.general):
                    continue
                if not amount_ok(shape.cpus, res.cpus, exact_cpus):
                    continue
                if res.memory_gib > 0 and not amount_ok(shape.memory_gib, res.memory_gib, exact_mem):
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
        if provider_state(offer.provider, enabled) and not include_disabled:
            continue
        price = offer.hourly_price(spot)
        if price * num_nodes > cap + _EPS:
            continue
        hosts.append(Ranked(offer, price, price * num_nodes, spot, enabled=not provider_state(offer.provider, enabled)))
    if hosts:
        out = sorted([*out, *hosts], key=lambda r: (r.total_hourly_price, order_key(r.offer)))[:limit]
    return out
