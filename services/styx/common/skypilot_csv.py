"""Read SkyPilot's v8 ``vms.csv`` catalogs into offers (used by ``sky catalog import``).

Columns are read by header name (their order differs by cloud). A row is dropped, and
counted under the reason, when its on-demand price, vCPUs or memory is missing, not a
number, zero or negative, when its spot price is negative, or when it names an
accelerator with a missing, zero, negative or fractional count. Cloud-specific rows (GCP
prices accelerators per GPU, attached to host VMs) are handled by the provider's catalog
adapter (``styx.common.catalog_rules``), never by a provider test here.
"""

from __future__ import annotations

import csv
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from styx.common import catalog_rules
from styx.common.catalog_rules import CsvRow
from styx.common.errors import InvalidArgument
from styx.common.offers import Offer, gc_paused, make_offer

_GIB_PER_MIB = 1 / 1024
_MIB = re.compile(r"SizeInMiB'?\"?\s*:\s*(\d+)")
_NAN = float("nan")


@dataclass(frozen=True)
class LoadStats:
    """What a loader read and what it skipped (with why), for import reports."""

    offers: int
    skipped: dict[str, int]


def _num(text: str) -> float | None:
    """None for an empty cell, NaN for one that is not a finite number."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return _NAN
    return value if math.isfinite(value) else _NAN


def gpu_memory_gib(info: str) -> float:
    """GPU memory in GiB from SkyPilot's GpuInfo cell (0 when it does not say)."""
    match = _MIB.search(info) if info else None
    return round(int(match.group(1)) * _GIB_PER_MIB, 3) if match else 0.0


def positive_problem(value: float | None, what: str, missing: str = "") -> str:
    """Why ``value`` is no positive number ("" when it is): missing, not a number, <= 0."""
    if value is None:
        return missing or f"no {what}"
    if value != value:  # NaN
        return f"{what} not a number"
    if value <= 0:
        return f"zero or negative {what}"
    return ""


def spot_problem(value: float | None) -> str:
    """Why a spot price is unusable ("" when it is fine; missing or 0 means no spot market)."""
    if value is not None and value != value:
        return "spot price not a number"
    if value is not None and value < 0:
        return "negative spot price"
    return ""


def count_problem(row: CsvRow) -> str:
    """Why a row's accelerator count is unusable ("" when fine or when it names none)."""
    if not row.accelerator_name:
        return ""
    why = positive_problem(row.accelerator_count, "accelerator count")
    if why:
        return why
    count = row.accelerator_count or 0.0
    return "fractional GPU" if count != int(count) else ""


def row_problem(row: CsvRow) -> str:
    """Why a plain row (an instance type) cannot be an offer; "" when it can."""
    return (
        positive_problem(row.price, "on-demand price")
        or spot_problem(row.spot_price)
        or positive_problem(row.cpus, "vCPUs")
        or positive_problem(row.memory_gib, "memory")
        or count_problem(row)
    )


def load_skypilot_csv(provider: str, path: Path | str) -> tuple[list[Offer], LoadStats]:
    """Read one SkyPilot v8 ``vms.csv`` of ``provider`` (aws, gcp, azure, ...) into offers.

    Rows that cannot be offers are skipped and counted by reason (module docstring). An
    offer's architecture is its family's when the provider's adapter knows the family,
    else the ``Arch`` column, else x86_64. AWS zones stay as the file spells them (zone ids
    such as use1-az1); Azure offers are region-wide.
    """
    provider = provider.strip().lower()
    if not provider:
        raise InvalidArgument("provider: required, e.g. aws")
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    adapter = catalog_rules.adapter_for(provider)
    sink = adapter.row_sink() if adapter is not None else None
    intern = sys.intern
    archs: dict[str, str] = {}
    offers: list[Offer] = []
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
        for cells in reader:
            if len(cells) < width:
                skip("short row")
                continue
            acc = cells[i_acc].strip() if i_acc >= 0 else ""
            row = CsvRow(
                cells[i_type].strip(),
                acc,
                _num(cells[i_cnt]) if acc and i_cnt >= 0 else None,
                _num(cells[i_cpus]),
                _num(cells[i_mem]),
                _num(cells[i_price]),
                _num(cells[i_spot]) if i_spot >= 0 else None,
                intern(cells[i_region].strip()),
                intern(cells[i_zone].strip()) if i_zone >= 0 else "",
                gpu_memory_gib(cells[i_info]) if acc and i_info >= 0 else 0.0,
                cells[i_arch].strip() if i_arch >= 0 else "",
            )
            if sink is not None and sink.take(row, skip):
                continue
            if not row.instance_type:
                skip("no instance type")
                continue
            why = row_problem(row)
            if why:
                skip(why)
                continue
            itype = intern(row.instance_type)
            arch = archs.get(itype)
            if arch is None:
                arch = archs[itype] = intern(catalog_rules.resolve_arch(provider, itype, row.arch))
            count = int(row.accelerator_count or 0) if acc else 0
            offer = make_offer(
                (
                    provider,
                    row.region,
                    row.zone,
                    itype,
                    row.cpus,
                    row.memory_gib,
                    intern(acc) if count else "",
                    count,
                    row.gpu_memory_gib,
                    row.price,
                    row.spot_price or 0.0,
                    arch,
                    0,
                )
            )
            if sink is not None and not sink.offer_seen(row, offer):
                continue
            offers.append(offer)
    if sink is not None:
        offers.extend(sink.finish(skip))
    return offers, LoadStats(len(offers), skipped)


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
