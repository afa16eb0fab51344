"""The scheduler's own tables (prefix ``sched_``): jobs, tasks, events, task output."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from styx.common.idempotency import request_table
from styx.common.leases import lease_table

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "sched_jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("request_id", String(128), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)

tasks = Table(
    "sched_tasks",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("job_id", String(64), nullable=False, index=True),
    # Submission order; ties within a priority run in this order.
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("name", String(64), nullable=False),
    Column("spec_json", Text, nullable=False),
    # The spec's resources alone, so a dispatch pass reads no full specs.
    Column("resources_json", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    # True while some dependency has not succeeded yet; such tasks are not offered to the broker.
    Column("blocked", Boolean, nullable=False, default=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("node_id", String(64), nullable=False, default=""),
    Column("gpu_indices_json", Text, nullable=False, default="[]"),
    Column("exit_code", Integer, nullable=True),
    Column("failure_reason", Text, nullable=False, default=""),
    # The agent reported the attempt over (its output is all shipped, its process gone).
    Column("agent_ended", Boolean, nullable=False, default=False),
    # The broker allocation of the current attempt was released.
    Column("released", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("scheduled_at", Float, nullable=True),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    # While PENDING after a failure: the earliest time the next attempt may be placed.
    Column("retry_at", Float, nullable=True),
    # Failed attempts so far (the retry policy's budget) and attempts lost with their node.
    Column("failures", Integer, nullable=False, default=0),
    Column("node_losses", Integer, nullable=False, default=0),
    # Nodes the task runs on at once (spec.num_nodes), and for placed multi-node tasks their
    # ranks as JSON (model.TaskRecord.ranks_json); "" for one-node tasks.
    Column("num_nodes", Integer, nullable=False, default=1),
    Column("ranks_json", Text, nullable=False, default=""),
    Index("ix_sched_tasks_node", "node_id", "state"),
    Index("ux_sched_tasks_job_name", "job_id", "name", unique=True),
)

# The dispatch order (priority high to low, then submission order) as an index, so a pass
# reads the first rows of the ready set instead of sorting every pending task.
Index("ix_sched_tasks_ready2", tasks.c.state, tasks.c.blocked, tasks.c.priority.desc(), tasks.c.seq)
# Allocations still to release are few; the reconcile loop finds them without a table scan.
Index("ix_sched_tasks_unreleased", tasks.c.released, tasks.c.agent_ended)
# Multi-node tasks whose ranks are not all over are few; work streams and the lost-node
# check find their ranks on other nodes through this index.
Index("ix_sched_tasks_gang", tasks.c.num_nodes, tasks.c.agent_ended)

# Dependency edges: task_id waits for the task named dep_name in the same job.
deps = Table(
    "sched_deps",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("dep_name", String(64), primary_key=True),
    Column("job_id", String(64), nullable=False),
    Index("ix_sched_deps_upstream", "job_id", "dep_name"),
)

events = Table(
    "sched_events",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("type", String(16), nullable=False),
    Column("job_id", String(64), nullable=False, index=True),
    Column("task_id", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("node_id", String(64), nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
)

logs = Table(
    "sched_logs",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    # Rank of a multi-node task (each rank has its own log); 0 for one-node tasks.
    Column("rank", Integer, primary_key=True, default=0),
    Column("offset", BigInteger, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

workdirs = Table(
    "sched_workdirs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    # gzip-compressed tar of the job's workdir, as the client packed it.
    Column("data", LargeBinary, nullable=False),
)

# Named counters advanced with UPDATE ... RETURNING, so replicas never hand out the same value.
counters = Table(
    "sched_counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Named leases: one replica at a time owns a role (e.g. "dispatcher") until expires_at.
leases = lease_table(metadata, "sched_leases")

# Which node ran each rank of each attempt: written when the attempt is placed and kept,
# so output a node ships late for an earlier attempt is still accepted from that node
# and from no other.
placements = Table(
    "sched_placements",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("rank", Integer, primary_key=True),
    Column("node_id", String(64), nullable=False),
)
requests = request_table(metadata, "sched_requests")
