"""SQLAlchemy engines for the services' own stores: SQLite (WAL) by default, PostgreSQL by URL.

Each service keeps its own tables (prefixed with the service name) and never reads
another's; the same code runs on both backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
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
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

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
