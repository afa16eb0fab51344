"""``styx.provider``: everything a provider plugin author needs, in one public package.

- the ``Provider`` protocol and its optional operations (``PowerControl``,
  ``CatalogSource``), declared through ``Capabilities``;
- the values crossing the boundary: ``Offer``, ``CreateRequest``, ``AgentLaunch``,
  ``ProviderInstance`` (alias ``InstanceInfo``), ``InstanceStatus``, ``ProviderStatus``,
  ``ProviderError`` / ``ProviderErrorKind``;
- ``ProviderBase``, a base class with the defaults, and ``hookimpl`` for the plugin hook;
- helpers: ``tags`` (Styx's tag set, per-cloud ``TagRules``), ``errors`` (``ErrorCodes``
  classification), ``config`` (``ProviderConfig`` from env and files), ``check``
  (``CachedCheck``), ``boot`` (the node boot script).

docs/plugins.md walks through writing a provider on this kit.
"""

from __future__ import annotations

from styx.provider.base import ProviderBase
from styx.provider.capabilities import (
    NO_CAPABILITIES,
    Capabilities,
    CatalogSource,
    PowerControl,
    capabilities_of,
    missing_operations,
)
from styx.provider.check import CachedCheck
from styx.provider.config import ConfigError, ProviderConfig
from styx.provider.errors import ErrorCodes, clip, kind_of_status, unexpected
from styx.provider.hooks import ENTRY_POINT_GROUP, PROJECT_NAME, hookimpl
from styx.provider.protocol import Provider
from styx.provider.tags import (
    STYX_TAGS,
    TAG_MANAGED,
    TAG_NODE,
    TAG_REQUEST,
    TagRules,
    TextRule,
    digest,
    instance_tags,
    user_tags,
)
from styx.provider.types import (
    PLANE_LABEL,
    AgentLaunch,
    CreateRequest,
    InstanceInfo,
    InstanceStatus,
    Offer,
    ProviderError,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "NO_CAPABILITIES",
    "PLANE_LABEL",
    "PROJECT_NAME",
    "STYX_TAGS",
    "TAG_MANAGED",
    "TAG_NODE",
    "TAG_REQUEST",
    "AgentLaunch",
    "CachedCheck",
    "Capabilities",
    "CatalogSource",
    "ConfigError",
    "CreateRequest",
    "ErrorCodes",
    "InstanceInfo",
    "InstanceStatus",
    "Offer",
    "PowerControl",
    "Provider",
    "ProviderBase",
    "ProviderConfig",
    "ProviderError",
    "ProviderErrorKind",
    "ProviderInstance",
    "ProviderStatus",
    "TagRules",
    "TextRule",
    "capabilities_of",
    "clip",
    "digest",
    "hookimpl",
    "instance_tags",
    "kind_of_status",
    "missing_operations",
    "unexpected",
    "user_tags",
]
