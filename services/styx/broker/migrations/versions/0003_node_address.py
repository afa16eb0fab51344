"""Node addresses (for multi-node tasks).

Revision ID: broker_0003
Revises: broker_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "broker_0003"
down_revision = "broker_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("broker_nodes", sa.Column("address", sa.String(256), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("broker_nodes") as batch:
        batch.drop_column("address")
