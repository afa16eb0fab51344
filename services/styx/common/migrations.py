"""Schema migrations (Alembic) for each service's own tables, on SQLite and PostgreSQL.

Each service keeps its revisions in ``styx/<service>/migrations/versions`` and its own
version table (``<service>_alembic_version``), so services sharing one PostgreSQL database
migrate independently. Services upgrade to head when they start; on PostgreSQL an
advisory lock makes concurrent replicas take turns.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine

from styx.common.store import pg_advisory


def _config(service: str, connection: Connection) -> object:
    from alembic.config import Config

    import styx

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(styx.__file__).parent / service / "migrations"))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = f"{service}_alembic_version"
    return cfg


def upgrade(engine: Engine, service: str, revision: str = "head") -> None:
    """Bring ``service``'s tables up to ``revision``."""
    from alembic import command

    with engine.begin() as conn:
        pg_advisory(conn, f"migrate-{service}")
        command.upgrade(_config(service, conn), revision)  # type: ignore[arg-type]


def current(engine: Engine, service: str) -> str | None:
    """The revision ``service``'s tables are at, or None before the first upgrade."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": f"{service}_alembic_version"})
        return ctx.get_current_revision()


def run_env() -> None:
    """Body of every service's migrations/env.py: run migrations on the given connection."""
    from alembic import context

    cfg = context.config
    context.configure(
        connection=cfg.attributes["connection"],
        version_table=cfg.attributes["version_table"],
        render_as_batch=True,  # SQLite can only ALTER through table copies
    )
    with context.begin_transaction():
        context.run_migrations()
