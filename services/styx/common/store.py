"""SQLAlchemy engines for the services' own stores: SQLite (WAL) by default, PostgreSQL by URL.

Each service keeps its own tables (prefixed with the service name) and never reads
another's; the same code runs on both backends.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, create_engine, event, insert, text
from sqlalchemy.engine import make_url

from styx.common.errors import InvalidArgument


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``; SQLite files get WAL mode and a busy timeout."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InvalidArgument(f"db url {url!r} is not a SQLAlchemy URL: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        pool: dict[str, Any] = {}
        if parsed.database and parsed.database != ":memory:":
            # The default pool (5 + 10 overflow) opened and closed a connection, with its
            # pragmas, on most calls of a busy service with a few hundred handler threads.
            pool = {"pool_size": 16, "max_overflow": 32}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets readers (status, logs) proceed while the scheduler loop writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// URLs mean psycopg 3, the driver the postgres extra installs.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def bulk_insert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many rows of plain values (every row with the keys of the first) in one
    executemany. SQLAlchemy's own executemany builds a parameter dict per row through its
    type machinery, which cost seconds for a 100k-task job; these columns need no type
    processing (str, int, float, bool), so the compiled statement goes to the driver as is.
    """
    if not rows:
        return
    keys = tuple(rows[0])
    compiled = _compiled_insert(table, keys, conn.dialect)
    if compiled.positional:
        order = compiled.positiontup or []
        params: list[Any] = [tuple(row[k] for k in order) for row in rows]
    else:
        params = [dict(row) for row in rows] if not isinstance(rows[0], dict) else list(rows)
    conn.exec_driver_sql(str(compiled), params)


@functools.lru_cache(maxsize=256)
def _compiled_insert(table: Table, keys: tuple[str, ...], dialect: Any) -> Any:
    """The INSERT of these columns, compiled once per dialect (compiling cost more than a small insert)."""
    return insert(table).values({k: bindparam(k) for k in keys}).compile(dialect=dialect)


def pg_advisory(conn: Connection, name: str, *, scope: str = "xact", unlock: bool = False) -> None:
    """Take (or, with ``unlock``, release) the PostgreSQL advisory lock called ``name``.

    Advisory locks are database-wide, so the key mixes in the current schema: two Styx
    deployments (or two test runs) in different schemas of one database never wait on
    each other. ``scope`` is "xact" (released at commit) or "session". A no-op elsewhere.
    """
    if conn.dialect.name != "postgresql":
        return
    if scope not in ("xact", "session") or (unlock and scope != "session"):
        raise ValueError(f"bad advisory lock scope {scope!r} (unlock={unlock})")
    fn = "pg_advisory_unlock" if unlock else ("pg_advisory_xact_lock" if scope == "xact" else "pg_advisory_lock")
    conn.execute(text(f"SELECT {fn}(hashtextextended(current_schema() || ':' || :name, 0))"), {"name": name})
