"""Harness fixtures for the provider contract suite; each cloud adds its harness here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from providers.harness import ProviderHarness
from providers.local_harness import LocalHarness


def _local(tmp_path: Path) -> ProviderHarness:
    return LocalHarness(tmp_path / "local-home")


# name -> factory(tmp_path) -> harness. A factory may call pytest.skip (SDK not installed).
HARNESSES: dict[str, Callable[[Path], ProviderHarness]] = {"local": _local}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProviderHarness]:
    """Each registered provider in turn."""
    h = HARNESSES[request.param](tmp_path)
    try:
        yield h
    finally:
        h.close()
