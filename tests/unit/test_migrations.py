"""Each service's Alembic migrations build exactly the schema its tables module declares."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from styx.broker import tables as broker_tables
from styx.common import migrations
from styx.provisioner import tables as prov_tables
from styx.scheduler import tables as sched_tables

SERVICES = {
    "scheduler": sched_tables.metadata,
    "broker": broker_tables.metadata,
    "provisioner": prov_tables.metadata,
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_migrations_match_tables(engine_factory, service: str) -> None:
    engine = engine_factory(service)
    migrations.upgrade(engine, service)
    migrations.upgrade(engine, service)  # idempotent: a restart runs it again
    assert migrations.current(engine, service) is not None
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": f"{service}_alembic_version"})
        diff = [d for d in compare_metadata(ctx, SERVICES[service]) if _mine(d, service)]
    assert not diff, f"{service}: tables.py and migrations differ; add a revision: {diff}"


def _mine(diff: object, service: str) -> bool:
    """Ignore other services' tables (they share a PostgreSQL database in production)."""
    text = repr(diff)
    prefix = {"scheduler": "sched_", "broker": "broker_", "provisioner": "prov_"}[service]
    return prefix in text


def test_scheduler_0002_backfills_resources_from_specs(engine_factory) -> None:
    import json

    from sqlalchemy import text

    engine = engine_factory("scheduler")
    migrations.upgrade(engine, "scheduler", "sched_0001")
    spec = {"name": "a", "run": "true", "resources": {"cpus": 2.0, "accelerators": [{"name": "T4", "count": 1}]}}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sched_tasks (task_id, job_id, seq, name, spec_json, priority, state, blocked, attempt,"
                " node_id, gpu_indices_json, failure_reason, agent_ended, released, created_at, failures, node_losses)"
                " VALUES ('t-1', 'j-1', 1, 'a', :spec, 0, 'PENDING', false, 0, '', '[]', '', false, false, 0, 0, 0)"
            ),
            {"spec": json.dumps(spec)},
        )
    migrations.upgrade(engine, "scheduler")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT resources_json FROM sched_tasks WHERE task_id = 't-1'")).scalar_one()
    assert json.loads(stored) == spec["resources"]
