"""The image_id a provision was asked to start (broker_provisions.image_id).

Revision ID: broker_0007
Revises: broker_0006
"""

import sqlalchemy as sa
from alembic import op

revision = "broker_0007"
down_revision = "broker_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("broker_provisions", sa.Column("image_id", sa.String(512), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("broker_provisions") as batch:
        batch.drop_column("image_id")
