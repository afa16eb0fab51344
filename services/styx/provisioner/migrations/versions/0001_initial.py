"""Provisioner tables: operations and instances.

Revision ID: prov_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "prov_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prov_operations",
        sa.Column("operation_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(256), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("error_kind", sa.String(16), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_prov_operations_state", "prov_operations", ["state"])
    op.create_index("ix_prov_operations_node_id", "prov_operations", ["node_id"])
    op.create_table(
        "prov_instances",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(256), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("instance_type", sa.String(128), nullable=False),
        sa.Column("offer_json", sa.Text, nullable=False),
        sa.Column("spot", sa.Boolean, nullable=False),
        sa.Column("labels_json", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(256), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_prov_instances_provider", "prov_instances", ["provider"])
    op.create_index("ix_prov_instances_state", "prov_instances", ["state"])


def downgrade() -> None:
    op.drop_table("prov_instances")
    op.drop_table("prov_operations")
