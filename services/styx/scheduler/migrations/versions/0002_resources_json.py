"""Tasks get a resources_json column so dispatch passes read no full specs.

Revision ID: sched_0002
Revises: sched_0001
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "sched_0002"
down_revision = "sched_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sched_tasks") as batch:
        batch.add_column(sa.Column("resources_json", sa.Text, nullable=False, server_default="{}"))
    # Backfill from the stored specs, then drop the default: new rows always set it.
    conn = op.get_bind()
    tasks = sa.table("sched_tasks", sa.column("task_id"), sa.column("spec_json"), sa.column("resources_json"))
    rows = conn.execute(sa.select(tasks.c.task_id, tasks.c.spec_json)).all()
    for task_id, spec_json in rows:
        resources = json.loads(spec_json).get("resources", {})
        conn.execute(tasks.update().where(tasks.c.task_id == task_id).values(resources_json=json.dumps(resources)))
    with op.batch_alter_table("sched_tasks") as batch:
        batch.alter_column("resources_json", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("sched_tasks") as batch:
        batch.drop_column("resources_json")
