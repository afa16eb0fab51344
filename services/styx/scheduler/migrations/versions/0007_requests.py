"""Request ids of mutating RPCs (sched_requests): AIP-155 deduplication across restarts and replicas.

Revision ID: sched_0007
Revises: sched_0006
"""

import sqlalchemy as sa
from alembic import op

revision = "sched_0007"
down_revision = "sched_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sched_requests",
        sa.Column("method", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_sched_requests_created_at", "sched_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_sched_requests_created_at", table_name="sched_requests")
    op.drop_table("sched_requests")
