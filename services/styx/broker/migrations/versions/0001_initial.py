"""Broker tables: nodes, allocations, provisioning attempts, imported catalogs.

Revision ID: broker_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "broker_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_nodes",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(256), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("instance_type", sa.String(128), nullable=False),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("memory_gib", sa.Float, nullable=False),
        sa.Column("gpus_json", sa.Text, nullable=False),
        sa.Column("labels_json", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("registered_at", sa.Float, nullable=False),
        sa.Column("last_heartbeat", sa.Float, nullable=False),
    )
    op.create_table(
        "broker_allocations",
        sa.Column("allocation_id", sa.String(160), primary_key=True),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("memory_gib", sa.Float, nullable=False),
        sa.Column("gpu_indices_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("released", sa.Boolean, nullable=False),
    )
    op.create_index("ix_broker_allocations_node_id", "broker_allocations", ["node_id"])
    op.create_index("ix_broker_allocations_released", "broker_allocations", ["released"])
    op.create_table(
        "broker_provisions",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("operation_id", sa.String(64), nullable=False),
        sa.Column("offer_json", sa.Text, nullable=False),
        sa.Column("spot", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("allocation_id", sa.String(160), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("error_kind", sa.String(16), nullable=False),
        sa.Column("hourly_price", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_broker_provisions_allocation_id", "broker_provisions", ["allocation_id"])
    op.create_index("ix_broker_provisions_task_id", "broker_provisions", ["task_id"])
    op.create_table(
        "broker_offers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("instance_type", sa.String(128), nullable=False),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("memory_gib", sa.Float, nullable=False),
        sa.Column("accelerator_name", sa.String(64), nullable=False),
        sa.Column("accelerator_count", sa.Integer, nullable=False),
        sa.Column("accelerator_memory_gib", sa.Float, nullable=False),
        sa.Column("price_per_hour", sa.Float, nullable=False),
        sa.Column("spot_price_per_hour", sa.Float, nullable=False),
        sa.Column("arch", sa.String(32), nullable=False),
        sa.Column("max_instances", sa.Integer, nullable=False),
    )
    op.create_index("ix_broker_offers_provider", "broker_offers", ["provider"])
    op.create_table(
        "broker_catalog_imports",
        sa.Column("provider", sa.String(64), primary_key=True),
        sa.Column("imported_at", sa.Float, nullable=False),
        sa.Column("offers", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(160), nullable=False),
    )


def downgrade() -> None:
    for table in ("broker_catalog_imports", "broker_offers", "broker_provisions", "broker_allocations", "broker_nodes"):
        op.drop_table(table)
