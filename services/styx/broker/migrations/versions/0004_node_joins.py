"""Redeemed join tokens (one-time node bootstrap credentials).

Revision ID: broker_0004
Revises: broker_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "broker_0004"
down_revision = "broker_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_node_joins",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(160), nullable=False),
        sa.Column("joined_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("broker_node_joins")
