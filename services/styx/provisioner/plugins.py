"""Building the plugin manager and the table of providers.

The plugin manager is built by ``make_plugin_manager`` (never at import time): add the
hook specifications, load entry points of the group ``styx.providers`` unless
``STYX_DISABLE_PLUGIN_AUTOLOAD`` is set, then ``check_pending()``. A plugin that fails to
import does not crash the provisioner: it is registered as a stand-in plugin whose
provider reports itself disabled with the import error as the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from importlib import metadata
from typing import cast

import pluggy

from styx.provider import (
    ENTRY_POINT_GROUP,
    CreateRequest,
    Provider,
    ProviderBase,
    ProviderError,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
    missing_operations,
)
from styx.provisioner import hookspecs

log = logging.getLogger(__name__)

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "DisabledProvider",
    "collect_providers",
    "load_entry_points",
    "make_plugin_manager",
]
DISABLE_AUTOLOAD_ENV = "STYX_DISABLE_PLUGIN_AUTOLOAD"

_REQUIRED_ATTRS = ("name", "check", "offers", "create", "terminate", "list_instances")


class DisabledProvider(ProviderBase):
    """Stands in for a provider that could not be loaded; it can never create anything."""

    def __init__(self, name: str, reason: str, hint: str = "") -> None:
        super().__init__()
        self.name = name
        self._status = ProviderStatus(enabled=False, reason=reason, hint=hint)

    def check(self) -> ProviderStatus:
        """Always disabled, with the load failure as the reason."""
        return self._status

    def create_instance(self, request: CreateRequest) -> str:
        """Refuse: the provider is not loaded."""
        raise ProviderError(ProviderErrorKind.INVALID, f"provider {self.name} is disabled: {self._status.reason}")

    def terminate(self, instance_id: str) -> None:
        """Refuse: the provider is not loaded."""
        raise ProviderError(ProviderErrorKind.INVALID, f"provider {self.name} is disabled: {self._status.reason}")

    def list_instances(self) -> list[ProviderInstance]:
        """Nothing is known."""
        return []


class _BrokenPlugin:
    """A plugin registered in place of an entry point that failed to load."""

    def __init__(self, name: str, reason: str, hint: str) -> None:
        self._provider = DisabledProvider(name, reason, hint)

    @hookspecs.hookimpl
    def styx_provider(self) -> Provider:
        """Contribute the disabled stand-in."""
        return self._provider


def make_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager with the hook specs and, unless disabled, the entry points.

    ``load_entrypoints=False`` (or the ``STYX_DISABLE_PLUGIN_AUTOLOAD`` environment variable)
    leaves the manager empty so that tests and embedders register exactly what they want.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if load_entrypoints and not os.environ.get(DISABLE_AUTOLOAD_ENV):
        load_entry_points(pm, metadata.entry_points(group=ENTRY_POINT_GROUP))
    pm.check_pending()
    return pm


def load_entry_points(pm: pluggy.PluginManager, entry_points: Iterable[metadata.EntryPoint]) -> None:
    """Register each entry point's module under the entry point's name.

    One that fails to import is registered as a disabled stand-in with the error as the
    reason, so ``ListProviders`` explains it instead of the service failing to start.
    """
    for ep in entry_points:
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue  # the same distribution can appear twice on sys.path; first wins
        try:
            plugin = ep.load()
        except Exception as exc:
            log.warning("provider plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
            reason = f"plugin {ep.value} failed to import: {type(exc).__name__}: {exc}"
            hint = f"check that the package providing entry point {ep.name!r} and its dependencies are installed"
            pm.register(_BrokenPlugin(ep.name, reason, hint), name=ep.name)
            continue
        pm.register(plugin, name=ep.name)


def collect_providers(pm: pluggy.PluginManager) -> dict[str, Provider]:
    """Call ``styx_provider`` on every plugin and return the providers by name.

    A result missing an operation of the interface (or one its declared capabilities
    need), or reusing a name, is replaced by a ``DisabledProvider`` that says so, rather
    than failing the whole provisioner.
    """
    providers: dict[str, Provider] = {}
    # Each implementation is called on its own (not through pm.hook.styx_provider()) so
    # that one plugin raising cannot hide the others, and the result keeps its plugin name.
    for impl in pm.hook.styx_provider.get_hookimpls():
        plugin_name = impl.plugin_name
        try:
            result: object = impl.function()
        except Exception as exc:
            log.warning("provider plugin %s raised in styx_provider", plugin_name, exc_info=exc)
            providers.setdefault(
                plugin_name,
                DisabledProvider(plugin_name, f"styx_provider() raised {type(exc).__name__}: {exc}"),
            )
            continue
        if result is None:
            continue
        missing = [attr for attr in _REQUIRED_ATTRS if not hasattr(result, attr)]
        # A declared capability whose operations are absent would fail only when used.
        missing += missing_operations(result) if not missing else []
        name = str(getattr(result, "name", "") or plugin_name)
        if missing:
            providers.setdefault(
                name,
                DisabledProvider(name, f"plugin {plugin_name} returned a provider without {', '.join(missing)}"),
            )
            continue
        if name in providers:
            log.warning("provider name %s is registered twice; keeping the first", name)
            continue
        providers[name] = cast(Provider, result)  # shape checked above (duck-typed, like pluggy)
    return dict(sorted(providers.items()))
