"""GCP machine types for the catalog: architecture and category from the series, and the
attachment of SkyPilot's per-GPU accelerator rows to their host VMs.

A machine type is ``<series>-<shape>-<size>`` (``n2-standard-8``, ``c4a-highmem-16``); the
series says the category and the architecture (t2a, c4a, n4a and a4x are ARM). In
SkyPilot's ``vms.csv`` a row with an empty InstanceType is an accelerator priced per GPU
count; it becomes offers on the host types that may carry it, in the same zone, priced
host + GPUs per market. Registered as the ``gcp`` entry of ``styx.catalog_adapters``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from styx.common.catalog_rules import (
    ACCELERATED,
    COMPUTE,
    GENERAL,
    HPC,
    MEMORY,
    OTHER,
    STORAGE,
    CsvRow,
    FamilyClass,
    Skip,
)
from styx.common.offers import Offer
from styx.common.skypilot_csv import positive_problem, spot_problem

# Series -> category, per GCP's machine family guide.
SERIES: dict[str, str] = {
    "e2": GENERAL, "f1": GENERAL, "g1": GENERAL, "n1": GENERAL, "n2": GENERAL, "n2d": GENERAL,
    "n4": GENERAL, "n4d": GENERAL, "n4a": GENERAL, "c3": GENERAL, "c3d": GENERAL, "c4": GENERAL,
    "c4a": GENERAL, "c4d": GENERAL, "t2a": GENERAL, "t2d": GENERAL,
    "c2": COMPUTE, "c2d": COMPUTE,
    "m1": MEMORY, "m2": MEMORY, "m3": MEMORY, "m4": MEMORY, "x4": MEMORY,
    "z3": STORAGE,
    "a2": ACCELERATED, "a3": ACCELERATED, "a4": ACCELERATED, "a4x": ACCELERATED, "g2": ACCELERATED,
    "g4": ACCELERATED,
    "h3": HPC, "h4d": HPC,
}  # fmt: skip
ARM_SERIES = frozenset({"t2a", "c4a", "n4a", "a4x"})

# GCP sells these GPUs only on dedicated machine families: accelerator rows of the catalog
# are priced per GPU count and attach to the host type named here (price = host + GPUs).
DEDICATED_HOSTS: dict[str, dict[int, tuple[str, ...]]] = {
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
N1_GPU_LIMITS: dict[str, dict[int, tuple[float, float]]] = {
    "T4": {1: (48, 312), 2: (48, 312), 4: (96, 624)},
    "P4": {1: (24, 156), 2: (48, 312), 4: (96, 624)},
    "V100": {1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
    "P100": {1: (16, 104), 2: (32, 208), 4: (96, 624)},
    "K80": {1: (8, 52), 2: (16, 104), 4: (32, 208), 8: (64, 416)},
}
N1_HOST = re.compile(r"^n1-(standard|highmem|highcpu)-\d+$")
# Families that GCP only sells with their GPUs attached (never as CPU-only VMs).
GPU_ONLY_FAMILIES = ("a2-", "a3-", "a4-", "g2-")

_Host = tuple[str, float, float, float, float]  # (type, cpus, memory, price, spot)


def classify_machine_type(name: str) -> FamilyClass | None:
    """FamilyClass of a machine type ("c4a-standard-8" -> arm64 general-purpose); TPU hosts
    ("n1-340-48-tpu") are accelerated; None for a name without a series."""
    series, sep, _ = name.partition("-")
    if not sep:
        return None
    category = ACCELERATED if name.endswith("-tpu") else SERIES.get(series, OTHER)
    return FamilyClass("arm64" if series in ARM_SERIES else "x86_64", category)


class GcpRowSink:
    """One read of GCP's vms.csv: accelerator rows are kept, hosts recorded, GPU-only
    families hidden as CPU offers; ``finish`` attaches the accelerators."""

    def __init__(self) -> None:
        self.accels: list[CsvRow] = []
        self.hosts: dict[tuple[str, str], tuple[float, float, float, float]] = {}
        self.n1_by_zone: dict[str, list[_Host]] = {}

    def take(self, row: CsvRow, skip: Skip) -> bool:
        """Keep accelerator rows (empty InstanceType); drop TPUs and unpriced ones."""
        if row.instance_type:
            return False
        if not row.accelerator_name or row.accelerator_name.lower().startswith("tpu"):
            skip("TPU (not supported)")
            return True
        why = (
            positive_problem(row.price, "on-demand price")
            or spot_problem(row.spot_price)
            or positive_problem(row.accelerator_count, "accelerator count")
        )
        if why:
            skip(why)
        elif row.accelerator_count != int(row.accelerator_count or 0):
            skip("fractional GPU")
        else:
            self.accels.append(row)
        return True

    def offer_seen(self, row: CsvRow, offer: Offer) -> bool:
        """Record CPU-only machine types as hosts; hide those sold only with GPUs (or TPUs)."""
        if offer.accelerator_count:
            return True
        itype = offer.instance_type
        spec = (offer.cpus, offer.memory_gib, offer.price_per_hour, offer.spot_price_per_hour)
        self.hosts[(itype, offer.zone)] = spec
        if N1_HOST.match(itype):
            self.n1_by_zone.setdefault(offer.zone, []).append((itype, *spec))
        return not (itype.startswith(GPU_ONLY_FAMILIES) or itype.endswith("-tpu"))

    def finish(self, skip: Skip) -> Iterator[Offer]:
        """Accelerator rows x host VMs in the same zone: price = host + GPUs, per market."""
        for row in self.accels:
            name, count, zone = row.accelerator_name, int(row.accelerator_count or 0), row.zone
            upper = name.upper()
            candidates: list[_Host] = []
            if upper in DEDICATED_HOSTS:
                for host in DEDICATED_HOSTS[upper].get(count, ()):
                    spec = self.hosts.get((host, zone))
                    if spec is not None:
                        candidates.append((host, *spec))
            elif count in N1_GPU_LIMITS.get(upper, {}):
                max_cpus, max_mem = N1_GPU_LIMITS[upper][count]
                candidates = [h for h in self.n1_by_zone.get(zone, ()) if h[1] <= max_cpus and h[2] <= max_mem]
            else:
                skip(f"no host family for {name}:{count}")
                continue
            if not candidates:
                skip("accelerator without a host VM in its zone")
                continue
            gpu_price, gpu_spot = row.price or 0.0, row.spot_price or 0.0
            for host, cpus, mem, host_price, host_spot in candidates:
                spot = round(host_spot + gpu_spot, 6) if host_spot > 0 and gpu_spot > 0 else 0.0
                arch = "arm64" if host.partition("-")[0] in ARM_SERIES else "x86_64"
                yield Offer(
                    "gcp", row.region, zone, host, cpus, mem, name, count, row.gpu_memory_gib,
                    round(host_price + gpu_price, 6), spot, arch,
                )  # fmt: skip


class GcpCatalogAdapter:
    """The ``gcp`` catalog adapter (see styx.common.catalog_rules)."""

    def classify(self, instance_type: str) -> FamilyClass | None:
        """Classify a machine type by its series."""
        return classify_machine_type(instance_type)

    def row_sink(self) -> GcpRowSink:
        """A fresh sink for one read of GCP's vms.csv."""
        return GcpRowSink()


ADAPTER = GcpCatalogAdapter()
