"""Dependency edges in their own table, and task names unique within a job.

Revision ID: sched_0003
Revises: sched_0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "sched_0003"
down_revision = "sched_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sched_deps",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("dep_name", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_sched_deps_upstream", "sched_deps", ["job_id", "dep_name"])
    op.create_index("ux_sched_tasks_job_name", "sched_tasks", ["job_id", "name"], unique=True)
    conn = op.get_bind()
    tasks = sa.table("sched_tasks", sa.column("task_id"), sa.column("job_id"), sa.column("spec_json"))
    deps = sa.table("sched_deps", sa.column("task_id"), sa.column("dep_name"), sa.column("job_id"))
    rows = conn.execute(sa.select(tasks.c.task_id, tasks.c.job_id, tasks.c.spec_json)).all()
    edges = [
        {"task_id": task_id, "dep_name": dep, "job_id": job_id}
        for task_id, job_id, spec_json in rows
        for dep in json.loads(spec_json).get("depends_on", [])
    ]
    if edges:
        conn.execute(deps.insert(), edges)


def downgrade() -> None:
    op.drop_index("ux_sched_tasks_job_name", "sched_tasks")
    op.drop_table("sched_deps")
