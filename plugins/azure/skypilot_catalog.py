"""Azure VM sizes for the catalog: architecture and category from the size's name.

A size is ``Standard_<family><vCPUs>[-<constrained vCPUs>]<features>[_<accelerator>][_v<N>]``,
e.g. ``Standard_D4pds_v5``: family D (general purpose), 4 vCPUs, features p (Ampere/Cobalt,
ARM), d (local disk), s (premium storage). Registered as the ``azure`` entry of
``styx.catalog_adapters``.
"""

from __future__ import annotations

import re

from styx.common.catalog_rules import ACCELERATED, COMPUTE, GENERAL, HPC, MEMORY, OTHER, STORAGE, FamilyClass, RowSink

_SIZE = re.compile(r"^([A-Z]+)(\d+)(?:-\d+)?([a-z]*)$")
# Family letters -> category, per Azure's own grouping. DC/EC (confidential computing)
# need confidential images, so they are special purpose like anything not listed.
FAMILIES: dict[str, str] = {
    "A": GENERAL, "B": GENERAL, "D": GENERAL, "DS": GENERAL,
    "F": COMPUTE, "FS": COMPUTE, "FX": COMPUTE,
    "E": MEMORY, "M": MEMORY, "G": MEMORY, "GS": MEMORY,
    "L": STORAGE,
    "NC": ACCELERATED, "NCC": ACCELERATED, "ND": ACCELERATED, "NG": ACCELERATED, "NV": ACCELERATED,
    "NP": ACCELERATED,
    "H": HPC, "HB": HPC, "HC": HPC, "HX": HPC,
}  # fmt: skip


def classify_size(name: str) -> FamilyClass | None:
    """FamilyClass of a VM size ("Standard_D4ps_v5" -> arm64 general-purpose); None when the
    name is not shaped like an Azure size."""
    parts = name.split("_")
    if len(parts) < 2 or parts[0] not in ("Standard", "Basic"):
        return None
    match = _SIZE.match(parts[1])
    if match is None:
        return None
    family, _, features = match.groups()
    return FamilyClass("arm64" if "p" in features else "x86_64", FAMILIES.get(family, OTHER))


class AzureCatalogAdapter:
    """The ``azure`` catalog adapter (see styx.common.catalog_rules)."""

    def classify(self, instance_type: str) -> FamilyClass | None:
        """Classify a VM size by its family letters and feature letters."""
        return classify_size(instance_type)

    def row_sink(self) -> RowSink | None:
        """Azure rows are plain offers."""
        return None


ADAPTER = AzureCatalogAdapter()
