"""Provisioner settings (the control plane's id, which labels its instances).

Revision ID: prov_0002
Revises: prov_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "prov_0002"
down_revision = "prov_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prov_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prov_settings")
