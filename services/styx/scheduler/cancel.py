"""Cancelling tasks and whole jobs (a job of any size in one transaction)."""

from __future__ import annotations

from sqlalchemy import and_, case, select, update

from styx.common.errors import InvalidArgument, NotFound
from styx.scheduler import tables as t
from styx.scheduler.gangs import GangMixin
from styx.scheduler.model import (
    ACTIVE,
    CANCELLED,
    PENDING,
    TERMINAL,
    TaskRecord,
)
from styx.scheduler.stats import JobView
from styx.scheduler.workqueue import Cancel, WorkItem


class Cancelling(GangMixin):
    """The cancel part of ``Scheduler``."""

    def cancel_task(self, task_id: str) -> TaskRecord:
        """Cancel a task; a finished task is returned unchanged."""
        events: list[tuple[str, TaskRecord, str]] = []
        with self._lock, self._engine.begin() as conn:
            rec = self.get_task(task_id)
            if rec.state in TERMINAL:
                return rec
            was = rec.state
            # A pending task has no agent work; a placed one ends when its agent confirms.
            idle = was == PENDING
            stamp = self._clock.now()
            why = "cancelled by user"
            self._finish(conn, rec, CANCELLED, None, why, stamp, events, agent_ended=idle, released=idle)
            pushes = self._cancel_ranks(conn, rec, "cancelled by user") if rec.ranks and was in ACTIVE else []
            self._resolve_dependents(conn, [rec], events)
            self._record_events(conn, events)
        if rec.ranks:
            for node_id, item in pushes:
                self.dispatcher.send(node_id, item)
        elif was in ACTIVE:
            self.dispatcher.send(rec.node_id, Cancel(rec.task_id, rec.attempt, "cancelled by user"))
        self.wake()
        self._notify()
        return rec

    def cancel_job(self, job_id: str, reason: str = "cancelled by user") -> JobView:
        """Cancel every unfinished task of a job in ONE transaction, whatever its size.

        Set-based: two UPDATEs (tasks with no agent work, and placed tasks, which end once
        their agents confirm), one bulk insert of events, and per-rank bookkeeping only for
        placed multi-node tasks. No dependent is resolved: every open task of the job is
        cancelled here, and dependencies never cross jobs.
        """
        if not job_id:
            raise InvalidArgument("job_id: required")
        with self._engine.connect() as conn:
            if conn.execute(select(t.jobs.c.job_id).where(t.jobs.c.job_id == job_id)).first() is None:
                raise NotFound(f"job {job_id!r} not found; `sky queue` lists jobs")
        cols = t.tasks.c
        pushes: list[tuple[str, WorkItem]] = []
        with self._lock, self._engine.begin() as conn:
            open_tasks = and_(cols.job_id == job_id, cols.state.not_in(list(TERMINAL)))
            # Only placed tasks are read: they owe their agents a Cancellation.
            placed = conn.execute(
                select(cols.task_id, cols.attempt, cols.node_id, cols.num_nodes, cols.ranks_json)
                .where(and_(cols.job_id == job_id, cols.state.in_(list(ACTIVE))))
                .order_by(cols.seq)
                .with_for_update()
            ).all()
            self._insert_task_events(conn, "CANCELLED", CANCELLED, reason, open_tasks)
            stamp = self._clock.now()
            # One pass: a task with no agent work (PENDING) is over at once; a placed one ends
            # for good when its agent confirms (agent_ended) and its allocation is released.
            idle = cols.state == PENDING
            conn.execute(
                update(t.tasks)
                .where(open_tasks)
                .values(
                    state=CANCELLED,
                    exit_code=None,
                    failure_reason=reason,
                    finished_at=stamp,
                    agent_ended=case((idle, True), else_=cols.agent_ended),
                    released=case((idle, True), else_=cols.released),
                )
            )
            for row in placed:
                if row.num_nodes > 1 and row.ranks_json:
                    gang = self.get_task(row.task_id)  # few: a gang is one task on many nodes
                    pushes += self._cancel_ranks(conn, gang, reason)
                else:
                    pushes.append((row.node_id, Cancel(row.task_id, row.attempt, reason)))
        for node_id, item in pushes:
            self.dispatcher.send(node_id, item)
        self.wake()
        self._notify()
        return self.get_job(job_id)
