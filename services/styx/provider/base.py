"""``ProviderBase``: the optional base class of the kit's providers.

It turns ``create``'s keyword arguments into one ``CreateRequest`` for
``create_instance``, declares no capabilities and no offers by default, and holds the
injected clock. Subclasses set ``name`` and ``capabilities`` and implement ``check``,
``create_instance``, ``terminate`` and ``list_instances``.
"""

from __future__ import annotations

from collections.abc import Mapping

from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.provider.capabilities import NO_CAPABILITIES, Capabilities
from styx.provider.types import AgentLaunch, CreateRequest, Offer


class ProviderBase:
    """Defaults and the ``create`` adapter shared by providers built on the kit."""

    name: str = ""
    capabilities: Capabilities = NO_CAPABILITIES

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SYSTEM_CLOCK

    def offers(self) -> list[Offer]:
        """None: a cloud's catalog lives in the broker, and the cloud refuses types it lacks."""
        return []

    def create(
        self,
        *,
        node_id: str,
        offer: Offer,
        spot: bool,
        labels: Mapping[str, str],
        request_id: str,
        agent_launch: AgentLaunch,
    ) -> str:
        """The ``Provider.create`` operation: packs the arguments for ``create_instance``."""
        request = CreateRequest(node_id, offer, spot, dict(labels), request_id, agent_launch)
        return self.create_instance(request)

    def create_instance(self, request: CreateRequest) -> str:
        """Create (or find again, for a repeated ``request_id``) the instance; see
        ``Provider.create`` for the contract."""
        raise NotImplementedError(f"{type(self).__name__} must implement create_instance")
