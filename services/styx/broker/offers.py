"""Offers the broker can provision: the catalog, the provisioner's host offers and which
providers are enabled, ranked by the optimizer; and why a request can never be held.

The provisioner is asked for host offers and provider status only by ``refresh``, which
the broker calls before it takes its lock: placement reads the cached answers and never
waits on the network.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Iterable, Mapping

from styx.broker.catalog import Catalog
from styx.broker.model import _FAILOVER_DEPTH, ProvisionerPort, _in_infra, describe
from styx.broker.optimizer import Ranking, alternatives, describe_request, rank
from styx.common.clock import Clock
from styx.common.offers import Offer
from styx.common.resources import Resources, gpu_matches, infra_parts

log = logging.getLogger(__name__)


# Seconds a caller waits for the first ListOffers / ListProviders answer another started.
_FIRST_WAIT_S = 15.0


class OfferBook:
    """Cached host offers and provider status, the current catalog, and ranking over both."""

    def __init__(
        self, provisioner: ProvisionerPort | None, catalog: Catalog, clock: Clock, ttl_s: float = 30.0
    ) -> None:
        self._provisioner = provisioner
        self._clock = clock
        self._ttl_s = ttl_s
        self.catalog = catalog
        self._offers: list[Offer] = []
        self._offers_at = 0.0
        self.known = False  # whether the provisioner ever answered ListOffers
        self._providers: dict[str, str] | None = None
        self._providers_at = 0.0
        self._capabilities: dict[str, tuple[str, ...]] = {}
        self._notes: dict[str, str] = {}
        self._refreshing = threading.Lock()
        self._memo: dict[tuple[Resources, int], Ranking] | None = None

    # ---- the provisioner's answers (network: call without the broker's lock) ------------------
    def refresh(self) -> None:
        """Re-read host offers and provider status when older than the TTL; one caller at a time."""
        if self._provisioner is None:
            return
        stamp = self._clock.monotonic()
        stale_offers = not self.known or stamp - self._offers_at > self._ttl_s
        lister = getattr(self._provisioner, "list_providers", None)  # optional on test doubles
        stale_providers = lister is not None and (self._providers is None or stamp - self._providers_at > self._ttl_s)
        if not (stale_offers or stale_providers):
            return
        # Before the first answer there is nothing to serve: wait for a refresh in flight
        # (another caller's) instead of answering "no offers" (`sky show-gpus` on a fresh plane).
        first = not self.known or (lister is not None and self._providers is None)
        if not self._refreshing.acquire(blocking=first, timeout=_FIRST_WAIT_S if first else -1):
            return
        try:
            if first and self.known and (lister is None or self._providers is not None):
                return  # the refresh we waited for answered
            if stale_offers:
                try:
                    self._offers, self._offers_at, self.known = self._provisioner.list_offers(), stamp, True
                except Exception as exc:
                    log.warning("cannot list offers: %s", exc)
            if stale_providers and lister is not None:
                try:
                    self._providers, self._providers_at = dict(lister()), stamp
                    caps = getattr(self._provisioner, "list_capabilities", None)
                    self._capabilities = dict(caps()) if caps is not None else {}
                    self._notes = dict(getattr(self._provisioner, "notes", None) or {})
                except Exception as exc:
                    log.warning("cannot list providers: %s", exc)
        finally:
            self._refreshing.release()

    def host_offers(self) -> list[Offer]:
        """The provisioner's offers as last read ([] without a provisioner)."""
        return self._offers

    def enabled(self, res: Resources | None = None) -> dict[str, str] | None:
        """provider -> "" (enabled) or why disabled; None when the provisioner cannot say.

        For ``res`` naming an image_id, providers that do not run per-task images
        (capability "images") count as disabled, with that as the reason.
        """
        if self._provisioner is None:
            return {}
        if getattr(self._provisioner, "list_providers", None) is None:
            return None
        providers = self._providers if self._providers is not None else {}
        image = _image_of(res) if res is not None else ""
        if not image:
            return providers
        cannot = f"runs no per-task image ({image}); kubernetes does"
        return {
            name: why or ("" if "images" in self._capabilities.get(name, ()) else cannot)
            for name, why in providers.items()
        } | {name: cannot for name in self.catalog.providers if name not in providers}

    # ---- ranking ----------------------------------------------------------------------------
    def batch(self, on: bool) -> None:
        """Memoize rankings for one allocate batch (its asks often share their resources)."""
        self._memo = {} if on else None

    def ranked(self, res: Resources, num_nodes: int = 1) -> Ranking:
        """Offers that could hold ``res`` (``num_nodes`` at once), cheapest first, for provisioning."""
        memo = self._memo
        found = memo.get((res, num_nodes)) if memo is not None else None
        if found is None:
            found = rank(
                self.catalog,
                res,
                num_nodes=num_nodes,
                enabled=self.enabled(res),
                host_offers=self._offers,
                limit=_FAILOVER_DEPTH,
                explain=False,
            )
            if memo is not None:
                memo[(res, num_nodes)] = found
        return found

    def infeasible_reason(self, res: Resources) -> str:
        """Why no enabled offer could ever hold ``res``; "" when some could or nobody can say yet."""
        if self._provisioner is None or not self.known or self.ranked(res).offers:
            return ""
        return self.explain_infeasible(res)

    def explain_infeasible(self, res: Resources) -> str:
        """The reasons every offer fails ``res``, for an INFEASIBLE answer."""
        host = [o for o in self._offers if o.provider not in self.catalog.providers]
        return _explain(self.catalog, res, host, self.enabled(res), self._notes)


def _image_of(res: Resources) -> str:
    """The image_id ``res`` (or, for alternatives, the first of them) names; "" for none."""
    return res.image_id or next((a.image_id for a in (*res.any_of, *res.ordered) if a.image_id), "")


def _explain(
    catalog: Catalog,
    res: Resources,
    host: Iterable[Offer],
    enabled: dict[str, str] | None,
    notes: Mapping[str, str] | None = None,
) -> str:
    host = list(host)
    _, alts = alternatives(res)
    unknown = unknown_accelerators(catalog, [a.name for alt in alts for a in alt.accelerators], host)
    if unknown:
        return unknown
    in_infra = [p for p in catalog.providers for a in alts if infra_parts(a.infra)[0] in ("", p)]
    if not in_infra and not any(_in_infra(a, o.provider, o.region, o.zone) for a in alts for o in host):
        where = f" in {res.infra}" if res.infra else ""
        return f"no enabled provider offers capacity{where}{_note(res.infra, notes or {})}; `sky check` shows providers"
    image = _image_of(res)
    if image and enabled is not None:
        wanted = {infra_parts(a.infra)[0] for a in alts}
        named = sorted(p for p in enabled if "" in wanted or p in wanted)
        if not any(not enabled[p] for p in named):
            where = f" in {res.infra}" if res.infra else ""
            return (
                f"image_id {image}: no enabled provider{where} runs a per-task image "
                f"({', '.join(named) or 'none'} cannot); kubernetes nodes do (`sky check kubernetes`)"
            )
    ranking = rank(catalog, res, enabled=enabled, host_offers=host, limit=1, explain=True)
    # Host offers read "local/local host has 4 CPUs, ..."; catalog families "aws p4d: 8x A100, ...".
    # Machines that exist (host offers) first: on a local plane they are what matters.
    ordered = sorted(ranking.rejections, key=lambda r: not r.reason.startswith("has "))
    shown = "; ".join(
        f"{r.family} {r.reason}" if r.reason.startswith("has ") else f"{r.family}: {r.reason}" for r in ordered[:6]
    )
    more = len(ranking.rejections) - 6
    tail = f" (+{more} more; `sky launch --dryrun` lists them)" if more > 0 else ""
    return f"no enabled provider can satisfy {describe(res)} ({describe_request(res)}): {shown}{tail}"


def unknown_accelerators(catalog: Catalog, names: Iterable[str], host: Iterable[Offer]) -> str:
    """When no name of ``names`` is an accelerator of the catalog (any provider, enabled or
    not) or of an existing machine: a one-line reason with the closest known names
    (difflib); else "". A typo is then refused at once, not explained family by family."""
    wanted = sorted(set(names))
    host_names = {o.accelerator_name for o in host if o.accelerator_name}
    if not wanted or any(
        n.upper() in catalog.accelerator_names or any(gpu_matches(h, n) for h in host_names) for n in wanted
    ):
        return ""
    spelled = {**catalog.accelerator_names, **{h.upper(): h for h in host_names}}
    close = []
    for name in wanted:
        close += [spelled[c] for c in difflib.get_close_matches(name.upper(), spelled, n=3, cutoff=0.5)]
    hint = f"; did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
    what = "accelerator" if len(wanted) == 1 else "accelerators"
    return f"unknown {what} {', '.join(wanted)}{hint} (`sky show-gpus` lists the catalog's accelerators)"


def _note(infra: str, notes: Mapping[str, str]) -> str:
    """ "; PROVIDER: what its check says" for the provider an infra names ("" when none).

    A note listing regions as ``REGION: ...`` parts separated by " | " (the SSH provider's
    pools) is narrowed to the part of the region the infra names."""
    provider, region, _ = infra_parts(infra) if infra else ("", "", "")
    note = notes.get(provider, "")
    if not note:
        return ""
    parts = note.split(" | ")
    if region and len(parts) > 1:
        mine = [p for p in parts if p.startswith(f"{region}: ")]
        note = mine[0] if mine else f"no region {region!r} (it has: {', '.join(p.split(': ')[0] for p in parts)})"
    note = " ".join(note.split())
    return f"; {provider}: {note if len(note) <= 300 else note[:297] + '...'}"
