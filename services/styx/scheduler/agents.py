"""The agents' side: the work a node must run, its WorkStream, and status reports.

Assignments reach agents through their WorkStreams; a reconnecting agent is re-sent what
it has not finished. A report applies one attempt's RUNNING / SUCCEEDED / FAILED /
CANCELLED (retrying by the task's policy) and frees the attempt's allocation."""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from sqlalchemy import and_, select

from styx.common.errors import FailedPrecondition, InvalidArgument
from styx.common.secretbox import SecretOpenError
from styx.scheduler import statements as sql
from styx.scheduler import tables as t
from styx.scheduler.gangs import GangMixin
from styx.scheduler.model import (
    ACTIVE,
    CANCELLED,
    FAILED,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    TERMINAL,
    IsActive,
    TaskRecord,
)
from styx.scheduler.queries import row_to_task
from styx.scheduler.workqueue import Assign, Cancel, WorkItem

log = logging.getLogger(__name__)

# How often a work stream re-reads its node's outstanding work from the store.
STREAM_RESYNC_S = 1.0



class AgentWork(GangMixin):
    """The agents' part of ``Scheduler``."""

    def reveal(self, node_id: str, item: WorkItem) -> WorkItem | None:
        """The work item as the agent gets it: an assignment's secrets opened.

        None when they cannot be opened (the key changed since they were sealed): the
        attempt then fails with the reason instead of running without them.
        """
        if not isinstance(item, Assign) or not item.spec.secrets:
            return item
        try:
            opened = self.secret_box.open(item.spec.secrets)
        except SecretOpenError as exc:
            log.warning("secrets of %s cannot be opened; failing attempt %d", item.task_id, item.attempt)
            self.report(node_id, item.task_id, item.attempt, FAILED, None, str(exc), item.rank)
            return None
        return replace(item, spec=replace(item.spec, secrets=opened))

    def outstanding_work(self, node_id: str) -> list[WorkItem]:
        """What a node's agent must have: live assignments and unconfirmed cancellations."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(t.tasks)
                .where(
                    and_(
                        t.tasks.c.node_id == node_id,
                        t.tasks.c.agent_ended.is_(False),
                        t.tasks.c.state.in_([SCHEDULED, RUNNING, CANCELLED]),
                    )
                )
                .order_by(t.tasks.c.seq)
            ).all()
            gangs = conn.execute(
                select(t.tasks)
                .where(and_(t.tasks.c.num_nodes > 1, t.tasks.c.agent_ended.is_(False), t.tasks.c.ranks_json != ""))
                .order_by(t.tasks.c.seq)
            ).all()
            with_workdir = self._jobs_with_workdir(conn, {r.job_id for r in rows} | {r.job_id for r in gangs})
        items: list[WorkItem] = []
        for row in gangs:
            rec = row_to_task(row)
            for i, slot in enumerate(rec.ranks):
                if slot.node_id != node_id or slot.ended:
                    continue
                if rec.state in ACTIVE and not slot.cancel:
                    items.append(self._gang_assign(rec, i, rec.job_id in with_workdir))
                else:
                    items.append(Cancel(rec.task_id, rec.attempt, slot.cancel or rec.failure_reason or "stopped", i))
        for row in rows:
            if row.num_nodes > 1:
                continue  # its ranks were handled above
            rec = row_to_task(row)
            if rec.state == CANCELLED:
                items.append(Cancel(rec.task_id, rec.attempt, rec.failure_reason))
            else:
                items.append(
                    Assign(rec.task_id, rec.job_id, rec.attempt, rec.spec, rec.gpu_indices, rec.job_id in with_workdir)
                )
        return items

    def work_stream(self, node_id: str, is_active: IsActive) -> Iterator[WorkItem]:
        """Yield a node's work: what is outstanding, then new items, each at most once.

        Pushed items arrive at once; the store is re-read every STREAM_RESYNC_S so that work
        placed by another replica, or pushed while the agent was away, is never missed.
        """
        if not node_id:
            raise InvalidArgument("node_id: required")
        q = self.dispatcher.attach(node_id)
        self.capacity_freed()  # a new node may unblock waiting tasks
        sent: set[tuple[str, str, int, int]] = set()
        try:
            resync_at = 0.0
            while is_active() and not self._stop.is_set():
                if self._clock.now() >= resync_at:
                    resync_at = self._clock.now() + STREAM_RESYNC_S
                    for item in self.outstanding_work(node_id):
                        if item.key not in sent:
                            sent.add(item.key)
                            yield item
                try:
                    pushed = q.get(timeout=max(0.01, resync_at - self._clock.now()))
                except queue.Empty:
                    continue
                if pushed is None:
                    return  # a newer stream of the same node took over
                if pushed.key not in sent:
                    sent.add(pushed.key)
                    yield pushed
        finally:
            self.dispatcher.detach(node_id, q)

    def report(
        self,
        node_id: str,
        task_id: str,
        attempt: int,
        state: str,
        exit_code: int | None,
        message: str,
        rank: int = 0,
    ) -> TaskRecord:
        """Apply an agent's report about an attempt (of one rank, for multi-node tasks); idempotent."""
        if state not in (RUNNING, SUCCEEDED, FAILED, CANCELLED):
            raise InvalidArgument(f"state: agents report RUNNING, SUCCEEDED, FAILED or CANCELLED, got {state}")
        events: list[tuple[str, TaskRecord, str]] = []
        release = False
        ended: list[TaskRecord] = []
        releases: list[str] = []
        pushes: list[tuple[str, WorkItem]] = []
        if not task_id:
            raise InvalidArgument("task_id: required")
        with self._lock, self._engine.begin() as conn:
            rec = self._task_on(conn, task_id)
            if attempt != rec.attempt:
                raise FailedPrecondition(
                    f"attempt: task {task_id} is at attempt {rec.attempt}, report was for attempt {attempt}"
                )
            stamp = self._clock.now()
            if rec.ranks:
                releases, pushes, release = self._report_rank(
                    conn, rec, node_id, rank, state, exit_code, message, stamp, events, ended
                )
            elif rec.spec.num_nodes > 1:
                pass  # a late report of an attempt whose ranks were all settled (re-queued)
            elif state == RUNNING:
                if rec.state == SCHEDULED:
                    sql.update_task(conn, task_id, state=RUNNING, started_at=stamp)
                    rec.state, rec.started_at = RUNNING, stamp
                    events.append(("STARTED", rec, f"on {node_id}"))
            elif rec.state in ACTIVE:
                failures = rec.failures + (state == FAILED)
                if state == FAILED and rec.spec.retry.allows(failures, exit_code):
                    delay = rec.spec.retry.delay(failures)
                    why = f"attempt {attempt} failed ({message or f'exit {exit_code}'}); retry in {delay:g} s"
                    self._requeue(conn, rec, stamp + delay, why, events, failures=failures, exit_code=exit_code)
                else:
                    reason = "" if state == SUCCEEDED else message
                    self._finish(conn, rec, state, exit_code, reason, stamp, events, agent_ended=True)
                    sql.update_task(conn, task_id, failures=failures)
                    ended = [rec]
                release = True
            elif rec.state in TERMINAL and not self._agent_ended(conn, task_id):
                # E.g. cancelled by a user: the agent now confirms its process group is gone.
                sql.update_task(conn, task_id, agent_ended=True)
                release = True
            self._resolve_dependents(conn, ended, events)
            self._record_events(conn, events)
        for node, item in pushes:
            self.dispatcher.send(node, item)
        # Successors made ready here need no freed capacity when the node has room: wake the
        # dispatcher before the release's broker call, which wakes it again once done.
        self.wake()
        self._notify()
        self._release_early(releases)
        if release:
            self._release(rec.task_id, attempt, rec.spec.num_nodes)
        return rec

    def _agent_ended(self, conn: Any, task_id: str) -> bool:
        return bool(conn.execute(select(t.tasks.c.agent_ended).where(t.tasks.c.task_id == task_id)).scalar())
