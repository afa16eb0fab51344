"""Imported catalog offers in the broker's own tables (``broker_offers``, ``broker_catalog_imports``).

Imports replace whole providers; they are written in one transaction, so a broker that
dies mid-import keeps the previous catalog.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from styx.broker import tables as t
from styx.common.errors import InvalidArgument
from styx.common.offers import Offer, gc_paused, make_offer
from styx.common.store import bulk_insert

_COLUMNS = (
    "provider", "region", "zone", "instance_type", "cpus", "memory_gib", "accelerator_name", "accelerator_count",
    "accelerator_memory_gib", "price_per_hour", "spot_price_per_hour", "arch", "max_instances",
)  # fmt: skip


@dataclass(frozen=True)
class ImportRecord:
    """When a provider's catalog was imported and how many offers it has."""

    provider: str
    imported_at: float
    offers: int


def validate_offer(offer: Offer, index: int) -> Offer:
    """Check an offer to import; InvalidArgument names it (``offers[i].field``) and the fix.

    Refused: an empty provider, region or instance type; a price, vCPU count or memory that
    is missing (0), negative or not finite; a negative spot price or accelerator count.
    """
    where = f"offers[{index}]"
    for name in ("provider", "region", "instance_type"):
        if not getattr(offer, name).strip():
            raise InvalidArgument(f"{where}.{name}: required")
    numbers = {
        "cpus": offer.cpus,
        "memory_gib": offer.memory_gib,
        "price_per_hour": offer.price_per_hour,
        "spot_price_per_hour": offer.spot_price_per_hour,
        "accelerator_memory_gib": offer.accelerator_memory_gib,
    }
    for name, value in numbers.items():
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument(f"{where}.{name}: must be a finite number >= 0, got {value}")
    # A catalog offer is something to buy: a free, CPU-less or memory-less one is a broken row
    # (placeholder or missing data) that the optimizer would otherwise rank first.
    for name in ("cpus", "memory_gib", "price_per_hour"):
        if getattr(offer, name) <= 0:
            raise InvalidArgument(
                f"{where}.{name}: must be greater than 0 ({offer.place}); drop the offer or fix its source"
            )
    if offer.accelerator_count < 0:
        raise InvalidArgument(f"{where}.accelerator_count: must be 0 or more, got {offer.accelerator_count}")
    if offer.accelerator_count and not offer.accelerator_name.strip():
        raise InvalidArgument(f"{where}.accelerator_name: required when accelerator_count is set ({offer.place})")
    if offer.provider != offer.provider.strip().lower():
        raise InvalidArgument(f"{where}.provider: use the lower-case plugin name, e.g. 'aws', got {offer.provider!r}")
    return offer


def load_imported(engine: Engine) -> tuple[dict[str, list[Offer]], dict[str, ImportRecord]]:
    """Imported offers by provider, and the import records."""
    cols = [t.offers.c[name] for name in _COLUMNS]
    by_provider: dict[str, list[Offer]] = {}
    with engine.connect() as conn, gc_paused():
        records = {
            r.provider: ImportRecord(r.provider, r.imported_at, r.offers)
            for r in conn.execute(select(t.catalog_imports))
        }
        for row in conn.execute(select(*cols).order_by(t.offers.c.id)):
            by_provider.setdefault(row[0], []).append(make_offer(tuple(row)))
    for provider in records:
        by_provider.setdefault(provider, [])
    return by_provider, records


_SLICE = 10_000


def save_import(engine: Engine, offers: Sequence[Offer], stamp: float, request_id: str) -> dict[str, int]:
    """Replace the stored offers of every provider present in ``offers``; returns counts per provider."""
    counts: dict[str, int] = {}
    for offer in offers:
        counts[offer.provider] = counts.get(offer.provider, 0) + 1
    with engine.begin() as conn:
        conn.execute(delete(t.offers).where(t.offers.c.provider.in_(list(counts))))
        conn.execute(delete(t.catalog_imports).where(t.catalog_imports.c.provider.in_(list(counts))))
        # In slices: the rows of ~100k offers at once would add their size again to the peak.
        for start in range(0, len(offers), _SLICE):
            rows = [{name: getattr(o, name) for name in _COLUMNS} for o in offers[start : start + _SLICE]]
            bulk_insert(conn, t.offers, rows)
        if counts:
            conn.execute(
                insert(t.catalog_imports),
                [
                    {"provider": p, "imported_at": stamp, "offers": n, "request_id": request_id}
                    for p, n in sorted(counts.items())
                ],
            )
    return counts


def import_records(engine: Engine) -> dict[str, ImportRecord]:
    """The import records alone (cheap): a replica compares them to know whether to reload offers."""
    with engine.connect() as conn:
        return {
            r.provider: ImportRecord(r.provider, r.imported_at, r.offers)
            for r in conn.execute(select(t.catalog_imports))
        }
