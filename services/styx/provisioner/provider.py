"""Compatibility name for ``styx.provider``, the plugin kit (import from there instead).

Kept so that code written against the provisioner's old module keeps importing; it holds
no definitions of its own.
"""

from __future__ import annotations

from styx.provider import (
    PLANE_LABEL,
    AgentLaunch,
    Capabilities,
    CreateRequest,
    InstanceStatus,
    Offer,
    Provider,
    ProviderError,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
)

__all__ = [
    "PLANE_LABEL",
    "AgentLaunch",
    "Capabilities",
    "CreateRequest",
    "InstanceStatus",
    "Offer",
    "Provider",
    "ProviderError",
    "ProviderErrorKind",
    "ProviderInstance",
    "ProviderStatus",
]
