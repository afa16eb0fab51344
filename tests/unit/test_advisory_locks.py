"""PostgreSQL advisory locks are per schema: Styx stores in different schemas of one
database (two deployments, or parallel test workers) never wait on each other's locks,
while two connections in the same schema still exclude each other."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from styx.common.store import make_engine, pg_advisory

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema_engines(postgres_url: str) -> Iterator[tuple[Engine, Engine, Engine]]:
    """Two engines on schema A and one on schema B of the same database."""
    admin = make_engine(postgres_url)
    names = [f"t_{secrets.token_hex(4)}" for _ in range(2)]
    with admin.begin() as conn:
        for name in names:
            conn.execute(text(f"CREATE SCHEMA {name}"))
    sep = "&" if "?" in postgres_url else "?"
    urls = [f"{postgres_url}{sep}options=-csearch_path%3D{name}" for name in names]
    engines = (make_engine(urls[0]), make_engine(urls[0]), make_engine(urls[1]))
    try:
        yield engines
    finally:
        for engine in engines:
            engine.dispose()
        with admin.begin() as conn:
            for name in names:
                conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


def _try_lock(engine: Engine) -> bool:
    """Whether a session lock "view" in ``engine``'s schema is free right now (no wait)."""
    with engine.connect() as conn:
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':' || 'view', 0))")
        ).scalar_one()
        if got:
            conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':' || 'view', 0))"))
        return bool(got)


def test_a_lock_excludes_its_own_schema_but_not_another(schema_engines: tuple[Engine, Engine, Engine]) -> None:
    holder_engine, same_schema, other_schema = schema_engines
    with holder_engine.connect() as holder:
        pg_advisory(holder, "view", scope="session")
        assert not _try_lock(same_schema)
        assert _try_lock(other_schema)
        pg_advisory(holder, "view", scope="session", unlock=True)
    assert _try_lock(same_schema)


def test_an_unlock_outside_a_session_lock_is_refused(schema_engines: tuple[Engine, Engine, Engine]) -> None:
    with schema_engines[0].connect() as conn, pytest.raises(ValueError, match="scope"):
        pg_advisory(conn, "view", unlock=True)
