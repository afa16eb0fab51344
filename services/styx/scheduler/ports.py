"""What the scheduler needs from other services, as small Protocols (the gRPC adapters in
production, in-process cores in tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from styx.common.placement import Ask, Placement
from styx.scheduler.model import AbsentNode


class BrokerPort(Protocol):
    """What the scheduler needs from the resource broker (gRPC adapter in production)."""

    def allocate(self, asks: Sequence[Ask]) -> list[Placement]:
        """Place asks in order."""
        ...

    def release(self, allocation_id: str) -> None:
        """Free an allocation (idempotent)."""
        ...

    def release_many(self, allocation_ids: list[str]) -> None:
        """Free allocations in one call (idempotent)."""
        ...

    def absent_nodes(self) -> list[AbsentNode]:
        """Nodes the broker marked LOST (lease expired) or GONE (deregistered)."""
        ...
