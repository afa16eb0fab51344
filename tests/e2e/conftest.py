"""E2E fixtures: the `sky` command as a user types it, against one local plane per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import SkyCli, make_sky_cli


@pytest.fixture(scope="module")
def sky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkyCli]:
    """One local control plane per test module (own STYX_HOME), started by the first command."""
    yield from make_sky_cli(tmp_path_factory, "e2e-home")


@pytest.fixture
def fresh_sky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkyCli]:
    """A plane of its own for one test (for tests that kill and restart it)."""
    yield from make_sky_cli(tmp_path_factory, "plane-home")
