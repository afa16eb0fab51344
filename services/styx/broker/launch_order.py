"""What a launch would try, in order: the optimizer's ranking as provisioning sees it now.

The optimizer ranks what *could* serve a request. Provisioning then skips offers that are
cooling down after a failure (a reclaimed spot market, a zone out of capacity, a refused
provider) or at their instance limit (``STYX_LOCAL_MAX_NODES``), and refuses a gang of
``num_nodes`` outright when no set of offers and live nodes can hold that many at once.
``sky launch --dryrun`` (Optimize) must say what the real launch does, so both apply the
same functions here to one snapshot of the broker's state (``FleetView``):

- ``launch_order``: offers provisioning would try now first, the skipped ones after them
  (a launch waits for those), each skip explained in the rejections as ``skipped now: ...``;
- ``most_nodes`` / ``gang_cap_reason``: the gang's upper bound, and why it is too low.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from styx.broker.model import _offer_key, _scope_keys, _spot_key
from styx.broker.optimizer import Ranked, Ranking, Rejection
from styx.common.offers import Offer

OfferKey = tuple[str, str, str, str]
SKIPPED = "skipped now: "


@dataclass(frozen=True)
class FleetView:
    """A snapshot of what provisioning consults: cooldowns and instances per offer."""

    # cooldown key (model._scope_keys / _spot_key) -> (until, why)
    failed: Mapping[tuple[str, ...], tuple[float, str]]
    # (provider, region, zone, instance type) -> live and booting instances of that offer
    instances: Mapping[OfferKey, int]
    stamp: float

    def cooling(self, ranked: Ranked) -> str:
        """Why the offer (in its market) is cooling down now; "" when it is not."""
        offer = ranked.offer
        keys = (*_scope_keys(offer), _spot_key(offer)) if ranked.spot else _scope_keys(offer)
        for key in keys:
            found = self.failed.get(key)
            if found and found[0] > self.stamp:
                return found[1]
        return ""

    def at_limit(self, offer: Offer) -> bool:
        """Whether the offer has as many instances as it may have."""
        return bool(offer.max_instances) and self.instances.get(_offer_key(offer), 0) >= offer.max_instances


def skip_reason(ranked: Ranked, fleet: FleetView) -> str:
    """Why provisioning would pass over this offer now ("" when it would try it)."""
    why = fleet.cooling(ranked)
    if why:
        return f"cooling down after a failure ({why})"
    if fleet.at_limit(ranked.offer):
        offer = ranked.offer
        return f"at its instance limit ({offer.max_instances}; for local nodes raise STYX_LOCAL_MAX_NODES)"
    return ""


def launch_order(ranking: Ranking, fleet: FleetView) -> Ranking:
    """The ranking in the order a launch tries it: offers it would try now, then skipped ones."""
    ready: list[Ranked] = []
    skipped: list[Ranked] = []
    notes: list[Rejection] = []
    for ranked in ranking.offers:
        why = skip_reason(ranked, fleet)
        if why:
            skipped.append(ranked)
            notes.append(Rejection(ranked.offer.place, SKIPPED + why))
        else:
            ready.append(ranked)
    return Ranking([*ready, *skipped], [*notes, *ranking.rejections])


def most_nodes(offers: Sequence[Ranked], live: Collection[OfferKey]) -> float:
    """How many nodes could ever hold the request at once: the live nodes that could (by
    their offer key) plus what every ranked offer may still create; unbounded as soon as one
    offer has no limit. Live nodes of a capped offer count within its cap."""
    caps: dict[OfferKey, int] = {}
    for ranked in offers:
        if not ranked.offer.max_instances:
            return float("inf")
        caps[_offer_key(ranked.offer)] = ranked.offer.max_instances
    return sum(caps.values()) + sum(1 for key in live if key not in caps)


def gang_cap_reason(offers: Sequence[Ranked], num_nodes: int, live: Collection[OfferKey], what: str) -> str:
    """Why ``num_nodes`` nodes can never exist at once ("" when they can); ``what`` describes
    the gang, e.g. "2 nodes of cpus=2 at once"."""
    if num_nodes <= 1:
        return ""
    limit = most_nodes(offers, live)
    if limit >= num_nodes:
        return ""
    caps = ", ".join(sorted({f"{r.offer.place} at most {r.offer.max_instances}" for r in offers})) or "no offer"
    return (
        f"{what}: at most {limit:g} such node(s) can exist ({caps}; {len(live)} live); "
        "for local nodes raise STYX_LOCAL_MAX_NODES"
    )


def gang_ranking(ranking: Ranking, num_nodes: int, live: Collection[OfferKey], what: str) -> Ranking:
    """``ranking`` unchanged when the gang can exist, else no offers and the reason first."""
    why = gang_cap_reason(ranking.offers, num_nodes, live, what)
    if not why:
        return ranking
    return Ranking([], [Rejection("*", why), *ranking.rejections])
