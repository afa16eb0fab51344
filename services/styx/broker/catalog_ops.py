"""The broker's catalog side: the catalog (built-in offers, imported providers replacing
theirs), optimizer answers as a launch would act on them, and accelerators.

A component the broker composes (no mixin): it reads host offers and provider status
from the ``OfferBook``, and cooldowns and instance counts from provisioning's
``fleet_view``, so ``sky launch --dryrun`` applies the launch's own rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Engine

from styx.broker import catalog_store
from styx.broker.catalog import Catalog
from styx.broker.launch_order import FleetView, OfferKey, gang_ranking, launch_order
from styx.broker.model import (
    _FAILOVER_DEPTH,
    MAX_IMPORT_OFFERS,
    AcceleratorInfo,
    AcceleratorOffer,
    CatalogInfo,
    _offer_key,
    describe,
)
from styx.broker.offers import OfferBook
from styx.broker.optimizer import Ranking, alternatives, rank
from styx.common.clock import Clock
from styx.common.errors import InvalidArgument, ResourceExhausted
from styx.common.memory import trim
from styx.common.offers import Offer
from styx.common.resources import Resources, infra_parts, parse_arch, parse_image_id

log = logging.getLogger(__name__)


class CatalogService:
    """Catalog imports and queries of the broker."""

    def __init__(
        self,
        engine: Engine,
        lock: AbstractContextManager[Any],
        book: OfferBook,
        fleet: Callable[[Sequence[Resources]], tuple[FleetView, list[OfferKey]]],
        base: Catalog,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._lock = lock
        self._book = book
        self._fleet = fleet
        self._clock = clock
        self._base_catalog = base
        self._imported, self._imports = catalog_store.load_imported(engine)
        book.catalog = base.merged(self._imported) if self._imported else base
        trim()

    @property
    def catalog(self) -> Catalog:
        """The current catalog (built-in offers with imported providers replaced)."""
        return self._book.catalog

    def sync(self) -> None:
        """Reload imported offers when another replica imported a catalog (cheap otherwise)."""
        if catalog_store.import_records(self._engine) != self._imports:
            self._imported, self._imports = catalog_store.load_imported(self._engine)
            self._book.catalog = self._base_catalog.merged(self._imported)

    def optimize(self, res: Resources, num_nodes: int = 1, limit: int = 10, include_disabled: bool = False) -> Ranking:
        """Rank offers for ``res`` cheapest first with the reasons for exclusions (creates nothing)."""
        if limit > 1000:
            raise InvalidArgument(f"limit: at most 1000, got {limit}")
        _, alts = alternatives(res)
        for alt in alts:
            infra_parts(alt.infra)  # InvalidArgument names the field
            parse_arch(alt.arch, "resources.arch")
            parse_image_id(alt.image_id, "resources.image_id")
        if res.any_of and res.ordered:
            raise InvalidArgument("resources: set any_of or ordered, not both")
        self._book.refresh()
        with self._lock:
            offers, enabled = self._book.host_offers(), self._book.enabled(res)
            fleet, live = self._fleet(alts)
        ranking = rank(
            self.catalog,
            res,
            num_nodes=num_nodes or 1,
            enabled=enabled,
            host_offers=offers,
            # As deep as the allocation ranks, so skips and the gang bound see the same offers.
            limit=max(limit or 10, _FAILOVER_DEPTH),
            include_disabled=include_disabled,
        )
        # What the real allocation does with the ranking (launch_order): skip cooling offers and
        # those at their limit, refuse a gang that can never exist. Same functions, same answer.
        ranking = launch_order(ranking, fleet)
        what = f"{num_nodes} nodes of {describe(res)} at once"
        ranking = gang_ranking(ranking, num_nodes or 1, live, what)
        del ranking.offers[limit or 10 :]
        return ranking

    def import_catalog(self, offers: Sequence[Offer], request_id: str = "") -> tuple[int, list[str]]:
        """Replace the catalog of every provider present in ``offers``; returns (count, providers)."""
        if len(offers) > MAX_IMPORT_OFFERS:
            raise ResourceExhausted(
                f"offers: at most {MAX_IMPORT_OFFERS} per call, got {len(offers)}; import one provider per call"
            )
        for i, offer in enumerate(offers):
            catalog_store.validate_offer(offer, i)
        if not offers:
            raise InvalidArgument("offers: at least one offer is required")
        stamp = self._clock.now()
        counts = catalog_store.save_import(self._engine, offers, stamp, request_id)
        by_provider: dict[str, list[Offer]] = {p: [] for p in counts}
        for offer in offers:
            by_provider[offer.provider].append(offer)
        with self._lock:
            imported = {**self._imported, **by_provider}
            imports = {
                **self._imports,
                **{p: catalog_store.ImportRecord(p, stamp, n) for p, n in counts.items()},
            }
        # Indexing ~100k offers takes a fraction of a second: build outside the lock, then swap.
        catalog = self._base_catalog.merged(imported)
        with self._lock:
            self._imported, self._imports, self._book.catalog = imported, imports, catalog
        trim()  # the request's messages and the old catalog are garbage now
        log.info("catalog imported", extra={"offers": len(offers), "providers": sorted(counts)})
        return len(offers), sorted(counts)

    def list_catalogs(self) -> list[CatalogInfo]:
        """One entry per catalog provider, sorted by name."""
        catalog, imports = self.catalog, self._imports
        regions: dict[str, set[str]] = {}
        for fam in catalog.families:
            regions.setdefault(fam.provider, set()).update(fam.regions)
        names = sorted(set(catalog.providers) | set(imports))
        return [
            CatalogInfo(
                p,
                catalog.providers.get(p, 0),
                p in imports,
                imports[p].imported_at if p in imports else 0.0,
                len(regions.get(p, ())),
            )
            for p in names
        ]

    def list_accelerators(self, name: str = "", include_disabled: bool = False) -> list[AcceleratorInfo]:
        """Accelerators of the catalog and of host offers, with the cheapest offer per provider and count."""
        self._book.refresh()
        catalog = self.catalog
        host = [o for o in self._book.host_offers() if o.provider not in catalog.providers]
        enabled = self._book.enabled()
        needle = name.strip().upper()
        cheapest: dict[tuple[str, str, int], list] = {}  # (NAME, provider, count) -> [offer, spot]

        def consider(offer: Offer, spot: float) -> None:
            key = (offer.accelerator_name.upper(), offer.provider, offer.accelerator_count)
            cur = cheapest.get(key)
            if cur is None:
                cheapest[key] = [offer, spot]
                return
            if (offer.price_per_hour, _offer_key(offer)) < (cur[0].price_per_hour, _offer_key(cur[0])):
                cur[0] = offer
            if spot > 0 and (cur[1] <= 0 or spot < cur[1]):
                cur[1] = spot

        def usable(provider: str) -> bool:
            return include_disabled or enabled is None or enabled.get(provider, "no plugin") == ""

        for upper in catalog.accelerator_names:
            if needle and needle not in upper:
                continue
            for provider in catalog.providers:
                if not usable(provider):
                    continue
                for shape in catalog.shapes(provider, "", upper):
                    if shape.ondemand:
                        consider(shape.ondemand[0], shape.spot[0].spot_price_per_hour if shape.spot else 0.0)
        for offer in host:
            wanted = not needle or needle in offer.accelerator_name.upper()
            if offer.accelerator_count and wanted and usable(offer.provider):
                consider(offer, offer.spot_price_per_hour)
        infos: dict[str, list[tuple[str, int, Offer, float]]] = {}
        for (upper, provider, count), (offer, spot) in cheapest.items():
            infos.setdefault(upper, []).append((provider, count, offer, spot))
        out = []
        for upper in sorted(infos):
            rows = sorted(infos[upper], key=lambda r: (r[0], r[1]))
            out.append(
                AcceleratorInfo(
                    name=catalog.accelerator_names.get(upper, rows[0][2].accelerator_name),
                    counts=tuple(sorted({r[1] for r in rows})),
                    providers=tuple(sorted({r[0] for r in rows})),
                    offers=tuple(AcceleratorOffer(c, o, sp) for _, c, o, sp in rows),
                    memory_gib=max(r[2].accelerator_memory_gib for r in rows),
                )
            )
        return out
