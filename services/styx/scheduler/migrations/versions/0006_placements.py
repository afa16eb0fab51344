"""Which node ran each rank of each attempt (sched_placements).

Revision ID: sched_0006
Revises: sched_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "sched_0006"
down_revision = "sched_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sched_placements",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("rank", sa.Integer, primary_key=True),
        sa.Column("node_id", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sched_placements")
