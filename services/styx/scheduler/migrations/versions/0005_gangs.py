"""Multi-node tasks: num_nodes and ranks_json on tasks, a rank in the log key.

Revision ID: sched_0005
Revises: sched_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "sched_0005"
down_revision = "sched_0004"
branch_labels = None
depends_on = None


def _rebuild_logs(with_rank: bool) -> None:
    """Copy sched_logs into a table with (or without) the rank in its key: a primary key
    cannot be altered on SQLite, and a copy works the same on PostgreSQL."""
    cols: list[sa.schema.SchemaItem] = [
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        *([sa.Column("rank", sa.Integer, primary_key=True)] if with_rank else []),
        sa.Column("offset", sa.BigInteger, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    ]
    new = op.create_table("sched_logs_new", *cols)
    old = sa.table(
        "sched_logs",
        sa.column("task_id"),
        sa.column("attempt"),
        sa.column("rank"),
        sa.column("offset"),
        sa.column("data"),
    )
    if with_rank:
        query = sa.select(old.c.task_id, old.c.attempt, sa.literal(0), old.c.offset, old.c.data)
        names = ["task_id", "attempt", "rank", "offset", "data"]
    else:
        query = sa.select(old.c.task_id, old.c.attempt, old.c.offset, old.c.data).where(old.c.rank == 0)
        names = ["task_id", "attempt", "offset", "data"]
    op.execute(sa.insert(new).from_select(names, query))
    op.drop_table("sched_logs")
    op.rename_table("sched_logs_new", "sched_logs")


def upgrade() -> None:
    op.add_column("sched_tasks", sa.Column("num_nodes", sa.Integer, nullable=False, server_default="1"))
    op.add_column("sched_tasks", sa.Column("ranks_json", sa.Text, nullable=False, server_default=""))
    op.create_index("ix_sched_tasks_gang", "sched_tasks", ["num_nodes", "agent_ended"])
    _rebuild_logs(with_rank=True)


def downgrade() -> None:
    op.drop_index("ix_sched_tasks_gang", "sched_tasks")
    with op.batch_alter_table("sched_tasks") as batch:
        batch.drop_column("ranks_json")
        batch.drop_column("num_nodes")
    _rebuild_logs(with_rank=False)
