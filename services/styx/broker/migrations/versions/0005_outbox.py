"""The provisioning outbox's queued terminations (broker_outbox); replicas (broker_epoch, broker_leases).

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
    epoch = op.create_table(
        "broker_epoch",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.bulk_insert(epoch, [{"name": "view", "value": 0}])
    op.create_table(
        "broker_leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("broker_leases")
    op.drop_table("broker_epoch")
    op.drop_table("broker_outbox")
