"""Harness fixtures for the provider contract suite.

Every module ``*_harness.py`` in this folder that defines ``make_harness(tmp_path)`` adds a
provider to the suite; ``make_harness`` may call ``pytest.skip`` (e.g. SDK not installed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from providers.harness import ProviderHarness

_HERE = Path(__file__).parent
HARNESSES: dict[str, Callable[[Path], ProviderHarness]] = {
    path.stem.removesuffix("_harness"): importlib.import_module(f"providers.{path.stem}").make_harness
    for path in sorted(_HERE.glob("*_harness.py"))
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProviderHarness]:
    """Each registered provider in turn."""
    h = HARNESSES[request.param](tmp_path)
    try:
        yield h
    finally:
        h.close()
