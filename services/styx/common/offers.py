"""The Offer: one thing a provider can create (an instance type in a place, with prices).

Shared by the provisioner (providers list offers) and the broker (ranks them); the one
place this concept lives. Protobuf conversion: ``offer_to_pb`` / ``offer_from_pb``.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Offer:
    """An instance type a provider can create, with its capacity and hourly prices."""

    provider: str
    region: str
    zone: str
    instance_type: str
    cpus: float
    memory_gib: float
    accelerator_name: str = ""
    accelerator_count: int = 0
    accelerator_memory_gib: float = 0.0
    price_per_hour: float = 0.0
    spot_price_per_hour: float = 0.0
    arch: str = "x86_64"
    max_instances: int = 0

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity of the offer within a catalog: (provider, region, zone, instance_type)."""
        return (self.provider, self.region, self.zone, self.instance_type)

    @property
    def place(self) -> str:
        """``provider/region[/zone]`` followed by the instance type, for messages."""
        where = "/".join(p for p in (self.provider, self.region, self.zone) if p)
        return f"{where} {self.instance_type}"

    def hourly_price(self, spot: bool) -> float:
        """Price per hour in the requested market (spot falls back to on-demand when absent)."""
        if spot and self.spot_price_per_hour > 0:
            return self.spot_price_per_hour
        return self.price_per_hour


_OFFER_FIELDS = tuple(f.name for f in fields(Offer))


# The slots' descriptors, in field order: setting through them bypasses the frozen
# dataclass's __setattr__.
_SLOTS = tuple(getattr(Offer, name) for name in _OFFER_FIELDS)
# Fields whose values repeat across a catalog (a region, a zone, a family's instance types):
# interned, 100k offers share a few thousand strings instead of holding half a million.
_SHARED = frozenset({"provider", "region", "zone", "instance_type", "accelerator_name", "arch"})
_SHARED_AT = tuple(i for i, name in enumerate(_OFFER_FIELDS) if name in _SHARED)


def make_offer(values: Sequence[object]) -> Offer:
    """Build an Offer from its field values in declaration order, fast, sharing repeated strings.

    Offer is a frozen dataclass whose generated ``__init__`` sets each of its 13 fields
    through ``object.__setattr__``; setting the slots directly gives an equal object in a
    fraction of the time, which matters when loading ~100k offers.
    """
    items = list(values)
    for i in _SHARED_AT:
        value = items[i]
        if isinstance(value, str):
            items[i] = sys.intern(value)
    offer = object.__new__(Offer)
    for slot, value in zip(_SLOTS, items, strict=True):
        slot.__set__(offer, value)
    return offer


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic structures.

    Loading creates about a million objects and no reference cycles; without the pause the
    collector repeatedly walks the growing heap, which costs a third of the load time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def offer_to_pb(offer: Offer) -> Any:
    """Convert to a ``styx.v1.Offer`` message."""
    from styx.v1 import common_pb2

    return common_pb2.Offer(
        provider=offer.provider,
        region=offer.region,
        zone=offer.zone,
        instance_type=offer.instance_type,
        cpus=offer.cpus,
        memory_gib=offer.memory_gib,
        accelerator_name=offer.accelerator_name,
        accelerator_count=offer.accelerator_count,
        accelerator_memory_gib=offer.accelerator_memory_gib,
        price_per_hour=offer.price_per_hour,
        spot_price_per_hour=offer.spot_price_per_hour,
        arch=offer.arch,
        max_instances=offer.max_instances,
    )


def offer_from_pb(msg: Any) -> Offer:
    """Convert from a ``styx.v1.Offer`` message."""
    return make_offer(
        (
            msg.provider,
            msg.region,
            msg.zone,
            msg.instance_type,
            msg.cpus,
            msg.memory_gib,
            msg.accelerator_name,
            msg.accelerator_count,
            msg.accelerator_memory_gib,
            msg.price_per_hour,
            msg.spot_price_per_hour,
            msg.arch,
            msg.max_instances,
        )
    )
