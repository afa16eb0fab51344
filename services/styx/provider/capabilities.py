"""Declared capabilities: what a provider can do beyond create / list / terminate.

A provider says what it supports in its ``capabilities`` attribute instead of the
provisioner probing for methods by name. The loader checks once that every declared
capability's operations exist (``missing_operations``); the core then reads the flags.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

from styx.provider.types import Offer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    """What a provider supports; every flag defaults to False."""

    #: ``stop(instance_id)`` / ``start(instance_id)`` (see ``PowerControl``).
    stop_start: bool = False
    #: ``create(spot=True)`` makes spot / preemptible capacity.
    spot: bool = False
    #: More than one node of a cluster at once.
    multi_node: bool = False
    #: Opening ports to the instance.
    ports: bool = False
    #: Choosing the boot image.
    images: bool = False
    #: Attaching volumes.
    volumes: bool = False
    #: ``catalog(regions)`` lists offers from the cloud's own APIs (see ``CatalogSource``).
    catalog: bool = False

    def names(self) -> list[str]:
        """The names of the capabilities that are on, in declaration order."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


#: No optional capability: what a provider that declares nothing gets.
NO_CAPABILITIES = Capabilities()

#: Operations a declared capability requires the provider to have.
REQUIRED_OPERATIONS: dict[str, tuple[str, ...]] = {"stop_start": ("stop", "start"), "catalog": ("catalog",)}


@runtime_checkable
class PowerControl(Protocol):
    """The operations of ``Capabilities.stop_start``."""

    def stop(self, instance_id: str) -> None:
        """Stop the instance (it keeps its disk); return once it is stopped."""
        ...

    def start(self, instance_id: str) -> None:
        """Start a stopped instance again."""
        ...


@runtime_checkable
class CatalogSource(Protocol):
    """The operation of ``Capabilities.catalog``."""

    def catalog(self, regions: Iterable[str] | None = None) -> list[Offer]:
        """The cloud's offers in ``regions`` (None: the configured ones), priced."""
        ...


def capabilities_of(provider: object) -> Capabilities:
    """The capabilities ``provider`` declares; none for a provider written before the kit
    (no ``capabilities`` attribute) or one whose attribute is not a ``Capabilities``."""
    declared = getattr(provider, "capabilities", NO_CAPABILITIES)
    if isinstance(declared, Capabilities):
        return declared
    log.warning("provider %r declares capabilities of type %s; ignoring them", provider, type(declared).__name__)
    return NO_CAPABILITIES


def missing_operations(provider: object) -> list[str]:
    """Operations a declared capability needs that ``provider`` lacks (empty when fine)."""
    caps = capabilities_of(provider)
    missing = []
    for capability, operations in REQUIRED_OPERATIONS.items():
        if getattr(caps, capability):
            missing += [f"{op} (for {capability})" for op in operations if not callable(getattr(provider, op, None))]
    return missing
