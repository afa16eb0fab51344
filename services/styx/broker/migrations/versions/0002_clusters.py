"""Named clusters.

Revision ID: broker_0002
Revises: broker_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "broker_0002"
down_revision = "broker_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_clusters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("resources_json", sa.Text, nullable=False),
        sa.Column("num_nodes", sa.Integer, nullable=False),
        sa.Column("node_ids_json", sa.Text, nullable=False),
        sa.Column("idle_minutes", sa.Integer, nullable=False),
        sa.Column("autostop_down", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("hourly_price", sa.Float, nullable=False),
        sa.Column("location", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("broker_clusters")
