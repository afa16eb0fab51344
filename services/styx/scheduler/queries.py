"""The scheduler's read side: tasks, jobs and workdirs (a mixin of Scheduler).

Reads never take the scheduler's lock: each is one snapshot of the store, so they scale
with the database, not with the dispatch loop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from styx.common.errors import InvalidArgument, NotFound, PermissionDenied
from styx.scheduler import tables as t
from styx.scheduler.model import RUNNING, SCHEDULED, TaskRecord, TaskSpec
from styx.scheduler.statements import TASK_BY_ID
from styx.scheduler.stats import JobView, job_state


def _rank_nodes(ranks_json: str) -> set[str]:
    """Node ids of a gang's ranks, from the ``ranks_json`` column ("" for one-node tasks)."""
    return {r["node_id"] for r in json.loads(ranks_json)["ranks"]} if ranks_json else set()


def row_to_task(row: Any) -> TaskRecord:
    """A ``sched_tasks`` row as a TaskRecord (the full spec parsed)."""
    rec = TaskRecord(
        task_id=row.task_id,
        job_id=row.job_id,
        seq=row.seq,
        spec=TaskSpec.from_json(row.spec_json),
        state=row.state,
        attempt=row.attempt,
        node_id=row.node_id,
        gpu_indices=tuple(json.loads(row.gpu_indices_json)),
        exit_code=row.exit_code,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        scheduled_at=row.scheduled_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        retry_at=row.retry_at,
        failures=row.failures,
    )
    rec.load_ranks(row.ranks_json)
    return rec


class QueriesMixin:
    """Reads of ``Scheduler``; uses its engine."""

    _engine: Engine

    def get_task(self, task_id: str) -> TaskRecord:
        """One task; NotFound when unknown."""
        if not task_id:
            raise InvalidArgument("task_id: required")
        with self._engine.connect() as conn:
            return self._task_on(conn, task_id)

    @staticmethod
    def _task_on(conn: Any, task_id: str) -> TaskRecord:
        """One task read on ``conn`` (inside the caller's transaction); NotFound when unknown."""
        row = conn.execute(TASK_BY_ID, {"task_id": task_id}).first()
        if row is None:
            raise NotFound(f"task {task_id!r} not found; `sky status` lists tasks")
        rec = row_to_task(row)
        rec.job_name = row.job_name
        return rec

    def list_tasks(
        self,
        job_id: str = "",
        states: Sequence[str] = (),
        limit: int = 1000,
        oldest_first: bool = False,
        after_seq: int | None = None,
    ) -> list[TaskRecord]:
        """Tasks, newest first unless oldest_first; ``after_seq`` continues past that
        submission number in the same order (the cursor of ListTasks' page tokens)."""
        query = select(t.tasks, t.jobs.c.name.label("job_name")).join(t.jobs, t.jobs.c.job_id == t.tasks.c.job_id)
        if job_id:
            query = query.where(t.tasks.c.job_id == job_id)
        if states:
            query = query.where(t.tasks.c.state.in_(list(states)))
        if after_seq is not None:
            query = query.where(t.tasks.c.seq > after_seq if oldest_first else t.tasks.c.seq < after_seq)
        query = query.order_by(t.tasks.c.seq.asc() if oldest_first else t.tasks.c.seq.desc()).limit(limit)
        with self._engine.connect() as conn:
            out = []
            for row in conn.execute(query):
                rec = row_to_task(row)
                rec.job_name = row.job_name
                out.append(rec)
            return out

    def get_job(self, job_id: str, task_limit: int = 1000) -> JobView:
        """A job with its first ``task_limit`` tasks and the counts of all; NotFound when unknown.

        Capped because a reply holding every task of a 100k-task job would pass gRPC's
        default 4 MB message limit in other languages' clients; ListTasks pages the rest.
        """
        if not job_id:
            raise InvalidArgument("job_id: required")
        with self._engine.connect() as conn:
            job = conn.execute(select(t.jobs).where(t.jobs.c.job_id == job_id)).first()
            if job is None:
                raise NotFound(f"job {job_id!r} not found; `sky queue` lists jobs")
            counts = {
                state: int(n)
                for state, n in conn.execute(
                    select(t.tasks.c.state, func.count()).where(t.tasks.c.job_id == job_id).group_by(t.tasks.c.state)
                )
            }
        tasks = self.list_tasks(job_id=job_id, limit=task_limit, oldest_first=True)
        return JobView(job.job_id, job.name, job_state(counts), counts, job.created_at, tuple(tasks))

    def list_jobs(self, limit: int = 100, before: tuple[float, str] | None = None) -> list[JobView]:
        """Jobs, newest first (ties by job id, descending), with task counts; ``before``
        (created_at, job_id) of the previous page's last job continues after it."""
        c = t.jobs.c
        query = select(t.jobs).order_by(c.created_at.desc(), c.job_id.desc()).limit(limit)
        if before is not None:
            stamp, job_id = before
            query = query.where(or_(c.created_at < stamp, and_(c.created_at == stamp, c.job_id < job_id)))
        with self._engine.connect() as conn:
            jobs = conn.execute(query).all()
            ids = [j.job_id for j in jobs]
            counts: dict[str, dict[str, int]] = {i: {} for i in ids}
            if ids:
                for job_id, state, n in conn.execute(
                    select(t.tasks.c.job_id, t.tasks.c.state, func.count())
                    .where(t.tasks.c.job_id.in_(ids))
                    .group_by(t.tasks.c.job_id, t.tasks.c.state)
                ):
                    counts[job_id][state] = int(n)
        return [JobView(j.job_id, j.name, job_state(counts[j.job_id]), counts[j.job_id], j.created_at) for j in jobs]

    def get_workdir(self, job_id: str, node_id: str = "") -> bytes:
        """The job's workdir archive (b"" when it has none); NotFound for an unknown job.

        With ``node_id`` (always, for node-scoped tokens: the interceptor binds it to the
        token) the node must hold a SCHEDULED or RUNNING task of the job, as one of its
        ranks, so a node cannot read the code of jobs it does not run.
        """
        with self._engine.connect() as conn:
            if conn.execute(select(t.jobs.c.job_id).where(t.jobs.c.job_id == job_id)).first() is None:
                raise NotFound(f"job {job_id!r} not found")
            if node_id:
                active = conn.execute(
                    select(t.tasks.c.node_id, t.tasks.c.ranks_json).where(
                        and_(t.tasks.c.job_id == job_id, t.tasks.c.state.in_([SCHEDULED, RUNNING]))
                    )
                ).all()
                if not any(node_id == n or node_id in _rank_nodes(ranks) for n, ranks in active):
                    raise PermissionDenied(f"node_id: node {node_id!r} runs no task of job {job_id!r}")
            data = conn.execute(select(t.workdirs.c.data).where(t.workdirs.c.job_id == job_id)).scalar()
        return bytes(data or b"")
