"""AWS instance families for the catalog: architecture and category from the type's name.

An EC2 type is ``<family>.<size>`` and a family is ``<series letters><generation><attribute
letters>``, e.g. ``m7gd``: series m (general purpose), generation 7, attributes g (Graviton,
ARM) and d (local NVMe). Registered as the ``aws`` entry of ``styx.catalog_adapters``.
"""

from __future__ import annotations

import re

from styx.common.catalog_rules import ACCELERATED, COMPUTE, GENERAL, HPC, MEMORY, OTHER, STORAGE, FamilyClass, RowSink

_FAMILY = re.compile(r"^([a-z]+)(\d+)([a-z]*)(?:-[a-z0-9]+)?$")
# The first High Memory families have no generation digit: u-6tb1, u-24tb1.
_HIGH_MEMORY = re.compile(r"^u-\d+tb\d+$")
# Series letters -> category, per EC2's own grouping. Anything else is special purpose.
SERIES: dict[str, str] = {
    "m": GENERAL, "t": GENERAL, "a": GENERAL,
    "c": COMPUTE,
    "r": MEMORY, "x": MEMORY, "z": MEMORY, "u": MEMORY,
    "i": STORAGE, "d": STORAGE, "h": STORAGE, "im": STORAGE, "is": STORAGE,
    "p": ACCELERATED, "g": ACCELERATED, "inf": ACCELERATED, "trn": ACCELERATED, "dl": ACCELERATED,
    "f": ACCELERATED, "vt": ACCELERATED,
    "hpc": HPC,
}  # fmt: skip
# Families whose series letters do not say ARM: a1 (first Graviton), mac2* (Apple silicon).
_ARM_FAMILIES = ("a1",)
_ARM_PREFIXES = ("mac2",)


def classify_family(family: str) -> FamilyClass | None:
    """FamilyClass of an EC2 family ("m7g" -> arm64 general-purpose); None when not EC2-shaped."""
    if _HIGH_MEMORY.match(family):
        return FamilyClass("x86_64", MEMORY)
    match = _FAMILY.match(family)
    if match is None:
        return None
    series, _, attributes = match.groups()
    arm = "g" in attributes or family in _ARM_FAMILIES or family.startswith(_ARM_PREFIXES)
    return FamilyClass("arm64" if arm else "x86_64", SERIES.get(series, OTHER))


class AwsCatalogAdapter:
    """The ``aws`` catalog adapter (see styx.common.catalog_rules)."""

    def classify(self, instance_type: str) -> FamilyClass | None:
        """Classify ``m6i.xlarge`` by its family (the part before the dot)."""
        return classify_family(instance_type.split(".", 1)[0].lower())

    def row_sink(self) -> RowSink | None:
        """AWS rows are plain offers."""
        return None


ADAPTER = AwsCatalogAdapter()
