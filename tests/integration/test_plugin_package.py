"""A third-party plugin package, installed with pip, found through its entry point, used.

The example package of docs/plugins.md (tests/data/example_plugin) is copied to a
temporary directory, installed there with ``pip install --target`` (offline: no deps, no
build isolation), put on ``sys.path``, loaded by the real plugin loader from the
``styx.providers`` entry point, and driven through the provisioner core: create, list,
stop/start (a declared capability), terminate. Everything is removed afterwards.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from styx.common.store import make_engine
from styx.provider import AgentLaunch, Offer, Provider, capabilities_of
from styx.provisioner.core import InstanceState, OperationState, Provisioner
from styx.provisioner.plugins import DISABLE_AUTOLOAD_ENV, ENTRY_POINT_GROUP, collect_providers, make_plugin_manager

EXAMPLE = Path(__file__).parent.parent / "data" / "example_plugin"
MODULE = "styx_example_plugin"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example package pip-installed into a target directory on sys.path."""
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    target = tmp_path / "site"
    # A wheel is built in a temporary directory of pip's own, so the source tree stays clean.
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [*cmd, "--target", str(target), str(source)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        # Uninstalled: off sys.path (monkeypatch) and out of sys.modules, so later tests
        # neither see its entry point nor a stale module.
        for name in [m for m in sys.modules if m == MODULE or m.startswith(f"{MODULE}.")]:
            del sys.modules[name]
        importlib.invalidate_caches()


def _wait(prov: Provisioner, op_id: str) -> OperationState:
    state = OperationState.PENDING
    for op in prov.watch_operation(op_id, poll_s=0.05):  # woken by the core on each change
        state = op.state
    return state


def test_pip_installed_plugin_is_loaded_through_its_entry_point_and_used(installed: Path, tmp_path: Path) -> None:
    declared = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert declared.get("example") == f"{MODULE}.provider"
    assert (installed / MODULE / "provider.py").is_file()

    providers = collect_providers(make_plugin_manager())
    example = providers["example"]
    assert isinstance(example, Provider) and type(example).__module__ == f"{MODULE}.provider"
    assert example.check().enabled
    assert capabilities_of(example).stop_start and not capabilities_of(example).spot

    engine = make_engine(f"sqlite:///{tmp_path / 'prov.db'}")
    prov = Provisioner(engine, {"example": example}, AgentLaunch("127.0.0.1:1", "127.0.0.1:2", token="t"))
    prov.start(reconcile=False)
    try:
        offer = Offer(provider="example", region="r1", zone="", instance_type="small", cpus=1, memory_gib=1)
        op = prov.provision("req-ex-1", offer, "node-ex1", labels={"styx.dev/cluster": "c1"})
        assert _wait(prov, op.operation_id) is OperationState.DONE
        (inst,) = prov.list_instances()
        assert inst.state is InstanceState.RUNNING and inst.instance_id.startswith("ex-")
        (seen,) = example.list_instances()
        assert (seen.instance_id, seen.node_id, seen.plane_id) == (inst.instance_id, "node-ex1", prov.plane_id)

        assert _wait(prov, prov.stop_instance("stop-ex-1", "node-ex1").operation_id) is OperationState.DONE
        assert prov.list_instances()[0].state is InstanceState.STOPPED
        assert _wait(prov, prov.start_instance("start-ex-1", "node-ex1").operation_id) is OperationState.DONE

        assert _wait(prov, prov.terminate("term-ex-1", "node-ex1").operation_id) is OperationState.DONE
        assert prov.list_instances() == [] and example.list_instances() == []
    finally:
        prov.stop()
        engine.dispose()


def test_after_the_fixture_the_plugin_is_gone() -> None:
    # Runs after the test above in file order: the uninstall left no entry point behind.
    assert "example" not in {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert MODULE not in sys.modules
