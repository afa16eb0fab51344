"""The broker's own tables (prefix ``broker_``): nodes, allocations, provisions."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, MetaData, String, Table, Text

metadata = MetaData()

nodes = Table(
    "broker_nodes",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("instance_id", String(256), nullable=False, default=""),
    Column("region", String(64), nullable=False, default=""),
    Column("zone", String(64), nullable=False, default=""),
    Column("instance_type", String(128), nullable=False, default=""),
    Column("cpus", Float, nullable=False),
    Column("memory_gib", Float, nullable=False),
    # [{"index": 0, "name": "...", "memory_gib": 80.0}, ...]
    Column("gpus_json", Text, nullable=False, default="[]"),
    Column("labels_json", Text, nullable=False, default="{}"),
    Column("state", String(16), nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("last_heartbeat", Float, nullable=False),
)

allocations = Table(
    "broker_allocations",
    metadata,
    Column("allocation_id", String(160), primary_key=True),
    Column("task_id", String(64), nullable=False, default=""),
    Column("node_id", String(64), nullable=False, index=True),
    Column("cpus", Float, nullable=False),
    Column("memory_gib", Float, nullable=False),
    Column("gpu_indices_json", Text, nullable=False, default="[]"),
    Column("created_at", Float, nullable=False),
    Column("released", Boolean, nullable=False, default=False, index=True),
)

provisions = Table(
    "broker_provisions",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("operation_id", String(64), nullable=False, default=""),
    Column("offer_json", Text, nullable=False),
    Column("spot", Boolean, nullable=False, default=False),
    # pending -> registered | failed
    Column("state", String(16), nullable=False),
    Column("error", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)
