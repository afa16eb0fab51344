"""Unit-test fixtures: service stores on SQLite and, when reachable, PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from styx.common.store import make_engine

PG_URL = os.environ.get("STYX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> bool:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


_PG_OK = _pg_reachable()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_factory(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[str], Engine]]:
    """``factory(service)`` -> an engine on that service's store; the same name reopens it.

    On PostgreSQL each test gets its own schema (dropped afterwards), selected through
    search_path, so tests never see each other's rows.
    """
    engines: list[Engine] = []
    if request.param == "sqlite":

        def factory(service: str) -> Engine:
            engine = make_engine(f"sqlite:///{tmp_path / service}.db")
            engines.append(engine)
            return engine

        yield factory
    else:
        if not _PG_OK:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL is not reachable at {PG_URL}; .ci/run must start it")
            pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
        schema = f"t_{secrets.token_hex(4)}"
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))

        def factory(service: str) -> Engine:
            sep = "&" if "?" in PG_URL else "?"
            engine = make_engine(f"{PG_URL}{sep}options=-csearch_path%3D{schema}")
            engines.append(engine)
            return engine

        yield factory
        for engine in engines:
            engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
        return
    for engine in engines:
        engine.dispose()
