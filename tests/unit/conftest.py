"""Unit-test fixtures: each service's store on SQLite and on PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from styx.common.store import make_engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Engine]]:
    """``factory(service)`` -> an engine on that service's store; the same name reopens it.

    On PostgreSQL (the ``postgres_url`` fixture; skipped when unreachable) each test gets
    its own schema, selected through search_path and dropped afterwards.
    """
    engines: list[Engine] = []
    if request.param == "sqlite":

        def factory(service: str) -> Engine:
            engines.append(make_engine(f"sqlite:///{tmp_path / service}.db"))
            return engines[-1]

        yield factory
    else:
        url = request.getfixturevalue("postgres_url")
        schema = f"t_{secrets.token_hex(4)}"
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        sep = "&" if "?" in url else "?"

        def factory(service: str) -> Engine:
            engines.append(make_engine(f"{url}{sep}options=-csearch_path%3D{schema}"))
            return engines[-1]

        yield factory
        for engine in engines:
            engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
        return
    for engine in engines:
        engine.dispose()
