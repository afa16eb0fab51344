"""Request ids of mutating RPCs (broker_requests): AIP-155 deduplication across restarts and replicas.

Revision ID: broker_0006
Revises: broker_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "broker_0006"
down_revision = "broker_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_requests",
        sa.Column("method", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_broker_requests_created_at", "broker_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_broker_requests_created_at", table_name="broker_requests")
    op.drop_table("broker_requests")
