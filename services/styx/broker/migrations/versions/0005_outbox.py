"""The provisioning outbox's queued terminations (broker_outbox).

Revision ID: broker_0005
Revises: broker_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "broker_0005"
down_revision = "broker_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_outbox",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("broker_outbox")
