"""The ready-set index follows the dispatch order (priority DESC, seq ASC); unreleased index.

Revision ID: sched_0004
Revises: sched_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "sched_0004"
down_revision = "sched_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sched_tasks_unreleased", "sched_tasks", ["released", "agent_ended"])
    op.drop_index("ix_sched_tasks_ready", "sched_tasks")
    op.create_index("ix_sched_tasks_ready2", "sched_tasks", ["state", "blocked", sa.text("priority DESC"), "seq"])


def downgrade() -> None:
    op.drop_index("ix_sched_tasks_unreleased", "sched_tasks")
    op.drop_index("ix_sched_tasks_ready2", "sched_tasks")
    op.create_index("ix_sched_tasks_ready", "sched_tasks", ["state", "blocked", "priority", "seq"])
