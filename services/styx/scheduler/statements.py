"""Prebuilt statements of the scheduler's hot paths (agent reports, dispatch passes).

Building a SQLAlchemy statement and its cache key each call cost about 85 µs here, and an
agent's report ran eight of them; a statement built once at import, with bind parameters
(``expanding`` ones for IN lists), keeps its cache key and compiled form, and costs
about 20 µs to execute. The statements are plain module constants: no state.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, or_, select, tuple_, update

from styx.scheduler import tables as t
from styx.scheduler.model import PENDING

_c = t.tasks.c

# One task with its job's name (``task_id``).
TASK_BY_ID = (
    select(t.tasks, t.jobs.c.name.label("job_name"))
    .join(t.jobs, t.jobs.c.job_id == _c.job_id)
    .where(_c.task_id == bindparam("task_id"))
)

# One task's columns; the SET clause is the parameters' keys besides ``k_task_id`` (an
# executemany of several tasks takes a list of such dicts).
UPDATE_TASK = update(t.tasks).where(_c.task_id == bindparam("k_task_id"))

# Mark attempts released (``keys``: (task_id, attempt) pairs).
MARK_RELEASED = (
    update(t.tasks).where(tuple_(_c.task_id, _c.attempt).in_(bindparam("keys", expanding=True))).values(released=True)
)

# The ready set in dispatch order (``stamp``: now, for retry backoffs; ``batch``: a limit).
READY = (
    select(_c.task_id, _c.attempt, _c.created_at, _c.retry_at, _c.resources_json, _c.num_nodes)
    .where(
        and_(
            _c.state == PENDING,
            _c.blocked.is_(False),
            or_(_c.retry_at.is_(None), _c.retry_at <= bindparam("stamp")),
        )
    )
    .order_by(_c.priority.desc(), _c.seq.asc())
    .limit(bindparam("batch"))
)

# Whole rows of tasks by id (``ids``), locked where the database can.
TASKS_FOR_UPDATE = select(t.tasks).where(_c.task_id.in_(bindparam("ids", expanding=True))).with_for_update()

# Which of ``jobs`` have a workdir archive.
JOBS_WITH_WORKDIR = select(t.workdirs.c.job_id).where(t.workdirs.c.job_id.in_(bindparam("jobs", expanding=True)))

# Blocked PENDING tasks with an edge to one of ``names`` in one of ``jobs`` (a superset of
# the wanted (job, name) pairs: the caller keeps the pairs it asked about).
BLOCKED_DEPENDENTS = (
    select(t.tasks, t.deps.c.dep_name.label("upstream_name"))
    .join(t.deps, t.deps.c.task_id == _c.task_id)
    .where(
        and_(
            t.deps.c.job_id.in_(bindparam("jobs", expanding=True)),
            t.deps.c.dep_name.in_(bindparam("names", expanding=True)),
            _c.state == PENDING,
            _c.blocked.is_(True),
        )
    )
)

_upstream = t.tasks.alias("upstream")
# The upstream tasks (name, state, failure reason) of each of ``ids``.
UPSTREAMS = (
    select(t.deps.c.task_id, _upstream.c.name, _upstream.c.state, _upstream.c.failure_reason)
    .join(_upstream, and_(_upstream.c.job_id == t.deps.c.job_id, _upstream.c.name == t.deps.c.dep_name))
    .where(t.deps.c.task_id.in_(bindparam("ids", expanding=True)))
)

# Unblock tasks (``ids``).
UNBLOCK = update(t.tasks).where(_c.task_id.in_(bindparam("ids", expanding=True))).values(blocked=False)


def update_task(conn: Any, task_id: str, **values: Any) -> None:
    """Set ``values`` on one task's row."""
    conn.execute(UPDATE_TASK, {"k_task_id": task_id, **values})
