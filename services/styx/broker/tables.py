"""The broker's own tables (prefix ``broker_``): nodes, allocations, provisions (attempts), offers."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text

from styx.common.idempotency import request_table
from styx.common.leases import lease_table

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
    # Where other nodes reach this one (multi-node tasks' STYX_NODE_IPS).
    Column("address", String(256), nullable=False, default=""),
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
    # Every provisioning attempt stays here, so failover history can be shown.
    Column("allocation_id", String(160), nullable=False, default="", index=True),
    Column("task_id", String(64), nullable=False, default="", index=True),
    # capacity | quota | auth | invalid | internal | "" (unknown)
    Column("error_kind", String(16), nullable=False, default=""),
    Column("hourly_price", Float, nullable=False, default=0.0),
    Column("updated_at", Float, nullable=False, default=0.0),
    # The task's image_id, sent to the provisioner as the instance's IMAGE_LABEL.
    Column("image_id", String(512), nullable=False, default=""),
)

# Imported catalog offers (ImportCatalog); they replace the built-in offers of their provider.
offers = Table(
    "broker_offers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(64), nullable=False, index=True),
    Column("region", String(64), nullable=False),
    Column("zone", String(64), nullable=False, default=""),
    Column("instance_type", String(128), nullable=False),
    Column("cpus", Float, nullable=False),
    Column("memory_gib", Float, nullable=False),
    Column("accelerator_name", String(64), nullable=False, default=""),
    Column("accelerator_count", Integer, nullable=False, default=0),
    Column("accelerator_memory_gib", Float, nullable=False, default=0.0),
    Column("price_per_hour", Float, nullable=False),
    Column("spot_price_per_hour", Float, nullable=False, default=0.0),
    Column("arch", String(32), nullable=False, default="x86_64"),
    Column("max_instances", Integer, nullable=False, default=0),
)

# One row per provider whose catalog was imported.
catalog_imports = Table(
    "broker_catalog_imports",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("imported_at", Float, nullable=False),
    Column("offers", Integer, nullable=False),
    Column("request_id", String(160), nullable=False, default=""),
)

# Named clusters (sky launch -c): nodes reserved for the tasks pinned to them.
clusters = Table(
    "broker_clusters",
    metadata,
    Column("name", String(64), primary_key=True),
    # INIT | UP | DOWN | FAILED
    Column("state", String(16), nullable=False),
    Column("resources_json", Text, nullable=False),
    Column("num_nodes", Integer, nullable=False),
    Column("node_ids_json", Text, nullable=False),
    Column("idle_minutes", Integer, nullable=False),
    Column("autostop_down", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("hourly_price", Float, nullable=False),
    Column("location", String(256), nullable=False),
)

# Redeemed join tokens (JoinNode): one row per node, so a boot script's token works once.
node_joins = Table(
    "broker_node_joins",
    metadata,
    Column("node_id", String(64), primary_key=True),
    # The redeeming call's idempotency key: only its retries get the node token again.
    Column("request_id", String(160), nullable=False),
    Column("joined_at", Float, nullable=False),
)

# The provisioning outbox's other calls: terminations recorded with the change that asks
# for them and sent after it commits, outside every lock (deleted once accepted).
outbox = Table(
    "broker_outbox",
    metadata,
    Column("request_id", String(64), primary_key=True),
    # terminate
    Column("kind", String(16), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("error", Text, nullable=False, default=""),
)

# Replicas: a counter bumped by every change to the shared state, so a replica that sees a
# value other than its own last one reloads its view first; and named leases (the
# "reconciler").
epoch = Table(
    "broker_epoch",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)

leases = lease_table(metadata, "broker_leases")
requests = request_table(metadata, "broker_requests")
