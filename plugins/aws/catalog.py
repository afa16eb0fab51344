"""Build AWS offers from EC2 itself: which instance types each zone offers
(DescribeInstanceTypeOfferings) and what each type is (DescribeInstanceTypes: vCPUs,
memory, GPUs, architectures, spot support).

EC2 has no prices; the Pricing API is a separate service with its own permissions. Prices
come from the broker's built-in catalog (reference price x the region's price factor), so
only types that catalog knows are priced. Unpriced types are left out by default: the
broker ranks cheapest first, and a price of 0 would make them win every time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from styx.provisioner.provider import Offer

log = logging.getLogger(__name__)

_BATCH = 100  # DescribeInstanceTypes takes at most 100 names per call


def builtin_prices() -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """(instance type -> its built-in row, region -> price factor) of the built-in catalog."""
    try:
        from importlib import resources

        text = resources.files("styx.broker").joinpath("data/builtin_offers.json").read_text()
        spec = json.loads(text)["providers"]["aws"]
    except Exception as exc:  # no broker data installed: nothing is priced
        log.warning("built-in AWS prices unavailable: %s", exc)
        return {}, {}
    rows = {values[0]: dict(zip(spec["columns"], values, strict=True)) for values in spec["types"]}
    factors = {region: float(place.get("price_factor", 1.0)) for region, place in spec["regions"].items()}
    return rows, factors


def build_catalog(
    regions: Iterable[str], client_for: Callable[[str], Any], include_unpriced: bool = False
) -> list[Offer]:
    """Offers (one per type and zone) for ``regions``; ``client_for(region)`` gives an EC2 client."""
    rows, factors = builtin_prices()
    offers: list[Offer] = []
    described: dict[str, dict[str, Any]] = {}
    for region in regions:
        client = client_for(region)
        offered: dict[str, list[str]] = {}
        pages = client.get_paginator("describe_instance_type_offerings").paginate(LocationType="availability-zone")
        for page in pages:
            for item in page.get("InstanceTypeOfferings", []):
                offered.setdefault(item["InstanceType"], []).append(item["Location"])
        wanted = sorted(t for t in offered if include_unpriced or t in rows)
        missing = [t for t in wanted if t not in described]
        for start in range(0, len(missing), _BATCH):
            reply = client.describe_instance_types(InstanceTypes=missing[start : start + _BATCH])
            described.update({d["InstanceType"]: d for d in reply.get("InstanceTypes", [])})
        factor = factors.get(region, 1.0)
        for instance_type in wanted:
            info = described.get(instance_type)
            if info is None:
                continue
            for zone in sorted(offered[instance_type]):
                offers.append(_offer(region, zone, info, rows.get(instance_type), factor))
    return offers


def _offer(region: str, zone: str, info: dict[str, Any], row: dict[str, Any] | None, factor: float) -> Offer:
    gpus = info.get("GpuInfo", {}).get("Gpus", [])
    name, count, memory = "", 0, 0.0
    if gpus:
        name = str(gpus[0].get("Name", ""))
        count = int(gpus[0].get("Count", 0))
        memory = float(gpus[0].get("MemoryInfo", {}).get("SizeInMiB", 0)) / 1024
    if row and row.get("accelerator_name"):
        name = str(row["accelerator_name"])  # the catalog's spelling (e.g. "A100-80GB")
    archs = info.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    spot_ok = "spot" in info.get("SupportedUsageClasses", [])
    price = float(row["price"]) * factor if row else 0.0
    spot = float(row["spot_price"]) * factor if row and spot_ok else 0.0
    return Offer(
        provider="aws",
        region=region,
        zone=zone,
        instance_type=str(info["InstanceType"]),
        cpus=float(info.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        memory_gib=round(float(info.get("MemoryInfo", {}).get("SizeInMiB", 0)) / 1024, 2),
        accelerator_name=name,
        accelerator_count=count,
        accelerator_memory_gib=round(memory, 2),
        price_per_hour=round(price, 6),
        spot_price_per_hour=round(spot, 6),
        arch="x86_64" if "x86_64" in archs or not archs else str(archs[0]),
    )
