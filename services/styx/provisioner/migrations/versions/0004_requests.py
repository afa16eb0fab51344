"""Request ids of mutating RPCs (prov_requests): AIP-155 deduplication across restarts and replicas.

Revision ID: prov_0004
Revises: prov_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "prov_0004"
down_revision = "prov_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prov_requests",
        sa.Column("method", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_prov_requests_created_at", "prov_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_prov_requests_created_at", table_name="prov_requests")
    op.drop_table("prov_requests")
