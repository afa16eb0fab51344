"""The provisioner's plugin system: documented hooks, entry points, third-party providers."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib import metadata
from types import SimpleNamespace

import pytest

from styx.provider import (
    AgentLaunch,
    Offer,
    Provider,
    ProviderInstance,
    ProviderStatus,
)
from styx.provisioner import hookspecs
from styx.provisioner.plugins import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    collect_providers,
    load_entry_points,
    make_plugin_manager,
)


def _hookspec_functions() -> list[tuple[str, object]]:
    return [
        (name, fn)
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, f"{hookspecs.PROJECT_NAME}_spec")
    ]


def test_there_are_hookspecs() -> None:
    assert [name for name, _ in _hookspec_functions()] == ["styx_provider"]


@pytest.mark.parametrize("name,fn", _hookspec_functions())
def test_every_hookspec_is_documented(name: str, fn: object) -> None:
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 80, f"hookspec {name} needs a full docstring"
    assert ":return:" in doc, f"hookspec {name} must document what it returns"
    for param in inspect.signature(fn).parameters:  # type: ignore[arg-type]
        assert param in doc, f"hookspec {name} does not document its parameter {param!r}"
    assert inspect.signature(fn).return_annotation is not inspect.Signature.empty  # type: ignore[arg-type]


def test_local_provider_is_found_through_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    declared = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert declared.get("local") == "styx_plugins.local.provider"
    pm = make_plugin_manager()
    import styx_plugins.local.provider as local_module

    assert pm.get_plugin("local") is local_module
    providers = collect_providers(pm)
    assert "local" in providers
    assert isinstance(providers["local"], Provider)
    assert providers["local"].check().enabled


def test_autoload_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    assert collect_providers(make_plugin_manager()) == {}
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV)
    assert collect_providers(make_plugin_manager(load_entrypoints=False)) == {}


class AcmeProvider:
    """A third party's provider, shaped like the interface without inheriting anything."""

    name = "acme"

    def check(self) -> ProviderStatus:
        return ProviderStatus(enabled=False, reason="no ACME credentials", hint="export ACME_KEY=...")

    def offers(self) -> list[Offer]:
        return [Offer(provider="acme", region="moon-1", zone="", instance_type="rover", cpus=2, memory_gib=4)]

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
        return f"acme-{node_id}"

    def terminate(self, instance_id: str) -> None:
        return None

    def list_instances(self) -> list[ProviderInstance]:
        return []


class AcmePlugin:
    """A plugin object (a module would do the same) registering AcmeProvider."""

    @hookspecs.hookimpl
    def styx_provider(self) -> AcmeProvider:
        return AcmeProvider()


def test_third_party_provider_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    pm = make_plugin_manager()
    pm.register(AcmePlugin(), name="acme")
    providers = collect_providers(pm)
    assert list(providers) == sorted(providers)  # sorted by name
    assert {"acme", "local", "aws", "gcp", "azure"} <= set(providers)  # third party beside the built-ins
    assert providers["acme"].check() == ProviderStatus(False, "no ACME credentials", "export ACME_KEY=...")


def test_plugin_that_fails_to_import_is_reported_disabled() -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    broken = metadata.EntryPoint(name="broken", value="styx_no_such_module_xyz.provider", group=ENTRY_POINT_GROUP)
    load_entry_points(pm, [broken])
    providers = collect_providers(pm)
    status = providers["broken"].check()
    assert not status.enabled
    assert "styx_no_such_module_xyz" in status.reason and "ModuleNotFoundError" in status.reason
    assert status.hint
    assert providers["broken"].offers() == []


def test_provider_missing_operations_or_raising_is_disabled_not_fatal() -> None:
    pm = make_plugin_manager(load_entrypoints=False)

    class Incomplete:
        @hookspecs.hookimpl
        def styx_provider(self) -> object:
            return SimpleNamespace(name="half", check=lambda: ProviderStatus(True))

    class Raising:
        @hookspecs.hookimpl
        def styx_provider(self) -> object:
            raise RuntimeError("boom")

    pm.register(Incomplete(), name="half")
    pm.register(Raising(), name="raising")
    providers = collect_providers(pm)
    assert not providers["half"].check().enabled
    assert "offers" in providers["half"].check().reason
    assert not providers["raising"].check().enabled
    assert "RuntimeError" in providers["raising"].check().reason


def test_agent_launch_repr_hides_the_token() -> None:
    launch = AgentLaunch("127.0.0.1:1", "127.0.0.1:2", token="s3cret")
    assert "s3cret" not in repr(launch)
