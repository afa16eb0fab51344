"""The provisioner's own tables (prefix ``prov_``): operations, instances and settings."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, MetaData, String, Table, Text

from styx.common.idempotency import request_table
from styx.common.leases import lease_table

metadata = MetaData()

operations = Table(
    "prov_operations",
    metadata,
    Column("operation_id", String(64), primary_key=True),
    Column("request_id", String(256), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("node_id", String(64), nullable=False, index=True),
    Column("error_kind", String(16), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The replica running the operation, until lease_until (renewed while it runs); an
    # unfinished operation whose lease expired is taken over by another replica.
    Column("owner", String(64), nullable=False, default=""),
    Column("lease_until", Float, nullable=False, default=0.0),
)

instances = Table(
    "prov_instances",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("provider", String(64), nullable=False, index=True),
    Column("instance_id", String(256), nullable=False, default=""),
    Column("region", String(64), nullable=False, default=""),
    Column("zone", String(64), nullable=False, default=""),
    Column("instance_type", String(128), nullable=False, default=""),
    Column("offer_json", Text, nullable=False),
    Column("spot", Boolean, nullable=False, default=False),
    Column("labels_json", Text, nullable=False, default="{}"),
    Column("state", String(16), nullable=False, index=True),
    Column("request_id", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Settings the provisioner keeps for life, e.g. "plane_id" (the owner label of its instances).
settings = Table(
    "prov_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

# Named leases: one replica at a time owns a role (the "reconciler") until expires_at.
leases = lease_table(metadata, "prov_leases")
requests = request_table(metadata, "prov_requests")
