"""Replicas: operation ownership (owner, lease_until) and named leases (prov_leases).

Revision ID: prov_0003
Revises: prov_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "prov_0003"
down_revision = "prov_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prov_operations") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("lease_until", sa.Float, nullable=False, server_default="0"))
    op.create_table(
        "prov_leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prov_leases")
    with op.batch_alter_table("prov_operations") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("owner")
