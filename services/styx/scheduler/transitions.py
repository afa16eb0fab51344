"""The scheduler's shared state and the state transitions every part uses.

``Transitions`` is the bottom layer of ``Scheduler``: it declares the state that
``Scheduler.__init__`` sets up (store, broker, clock, lock, wake-ups, the dispatcher's
queues) and holds what several parts do to tasks: end one (``_finish``), send it back to
PENDING (``_requeue``), unblock or skip its dependents in the same transaction, and free
allocations. The parts above it (submission, dispatch, agents, cancel, recovery) call
down into it and never into each other."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, update

from styx.common.clock import Clock
from styx.common.leases import Lease
from styx.common.placement import rank_allocation_id
from styx.common.secretbox import SecretBox
from styx.scheduler import statements as sql
from styx.scheduler import tables as t
from styx.scheduler.model import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SCHEDULED,
    SKIPPED,
    SUCCEEDED,
    TERMINAL,
    TaskRecord,
)
from styx.scheduler.outputs import OutputsMixin
from styx.scheduler.ports import BrokerPort
from styx.scheduler.queries import QueriesMixin, row_to_task
from styx.scheduler.releases import ReleaseBatcher
from styx.scheduler.workqueue import Assign, Dispatcher

# The event each state change writes.
EVENT_FOR_STATE = {
    SCHEDULED: "SCHEDULED",
    RUNNING: "STARTED",
    SUCCEEDED: "SUCCEEDED",
    FAILED: "FAILED",
    CANCELLED: "CANCELLED",
    SKIPPED: "SKIPPED",
}



class Transitions(QueriesMixin, OutputsMixin):
    """Shared state of ``Scheduler`` (set by its ``__init__``) and the transitions its parts share."""

    _engine: Engine
    _broker: BrokerPort | None
    _clock: Clock
    _lock: threading.RLock
    _changed: threading.Condition
    _wake: threading.Event
    _stop: threading.Event
    _dispatch_lease: Lease
    _releases: ReleaseBatcher
    _capacity_epoch: int
    dispatcher: Dispatcher
    starvation_s: float
    node_fence_s: float
    _secret_box: SecretBox | None

    @property
    def secret_box(self) -> SecretBox:
        """What seals and opens the secrets of this scheduler's tasks; without one given
        (tests), a key that lives as long as this object, made on first use."""
        if self._secret_box is None:
            from cryptography.fernet import Fernet

            self._secret_box = SecretBox(Fernet.generate_key())
        return self._secret_box

    def wake(self) -> None:
        """Ask the dispatch loop for a pass now (new work, freed capacity, new node)."""
        self._wake.set()

    def capacity_freed(self) -> None:
        """Capacity may have grown (a release, a node joined): the next pass re-sends every
        waiting task, then runs. An unlocked counter is enough: any change of it counts,
        and two bumps that race still change it."""
        self._capacity_epoch += 1
        self._wake.set()

    def hold_dispatch_lease(self) -> bool:
        """True while this replica owns the "dispatcher" lease.

        Every replica serves every RPC, but one dispatcher at a time places tasks. A lease
        row taken with a conditional UPDATE works the same on SQLite and PostgreSQL, expires
        by itself when its holder dies, and needs no transaction held across the broker
        call (a row lock would). Should two replicas ever overlap (a paused holder), the
        broker's idempotent allocation ids ("task/attempt") and the PENDING re-check under
        FOR UPDATE still keep a task from being placed twice.
        """
        if self._stop.is_set():
            return False  # stopping: never take the lease back after release_dispatch_lease
        return self._dispatch_lease.hold()

    def _finish(
        self,
        conn: Any,
        rec: TaskRecord,
        state: str,
        exit_code: int | None,
        reason: str,
        stamp: float,
        events: list[tuple[str, TaskRecord, str]],
        agent_ended: bool | None = None,
        released: bool | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "state": state,
            "exit_code": exit_code,
            "failure_reason": reason,
            "finished_at": stamp,
        }
        if agent_ended is not None:
            values["agent_ended"] = agent_ended
        if released is not None:
            values["released"] = released
        sql.update_task(conn, rec.task_id, **values)
        rec.state, rec.exit_code, rec.failure_reason, rec.finished_at = state, exit_code, reason, stamp
        events.append((EVENT_FOR_STATE[state], rec, reason))

    def _requeue(
        self, conn: Any, rec: TaskRecord, retry_at: float | None, reason: str, events: list[Any], **counters: int | None
    ) -> None:
        """Send a task back to PENDING for its next attempt (the attempt number grows on placement)."""
        conn.execute(
            update(t.tasks)
            .where(t.tasks.c.task_id == rec.task_id)
            .values(
                state=PENDING,
                retry_at=retry_at,
                failure_reason=reason,
                agent_ended=True,
                scheduled_at=None,
                started_at=None,
                ranks_json="",
                **counters,
            )
        )
        rec.state, rec.retry_at, rec.failure_reason = PENDING, retry_at, reason
        rec.ranks, rec.pending_retry = [], None
        events.append(("RETRYING", rec, reason))

    def _resolve_dependents(self, conn: Any, ended: list[TaskRecord], events: list[Any]) -> bool:
        """Unblock or skip the dependents of tasks that just reached a terminal state.

        Runs in the same transaction that ended them, so a crash can never leave a
        dependent blocked behind a finished upstream. Only direct dependents are looked at
        (through the edges table), so ending a task costs the same in a 10-task job and in
        a 100k-task DAG; skipping a task ends it too, so its dependents come next.
        Returns whether any task became ready.
        """
        frontier = {(rec.job_id, rec.spec.name) for rec in ended}
        unblocked = False
        while frontier:
            skipped: set[tuple[str, str]] = set()
            dependents = self._blocked_dependents(conn, frontier)
            if not dependents:
                break
            dep_rows = conn.execute(sql.UPSTREAMS, {"ids": [r.task_id for r in dependents]}).all()
            deps: dict[str, list[Any]] = {}
            for row in dep_rows:
                deps.setdefault(row.task_id, []).append(row)
            ready: list[str] = []
            for row in dependents:
                rec = row_to_task(row)
                mine = sorted(deps.get(rec.task_id, []), key=lambda d: d.name)
                bad = [d for d in mine if d.state in TERMINAL and d.state != SUCCEEDED]
                if bad:
                    why = f"upstream task {bad[0].name!r} ended {bad[0].state}"
                    if bad[0].failure_reason:
                        why += f": {bad[0].failure_reason}"
                    stamp = self._clock.now()
                    self._finish(conn, rec, SKIPPED, None, why, stamp, events, agent_ended=True, released=True)
                    skipped.add((rec.job_id, rec.spec.name))
                elif all(d.state == SUCCEEDED for d in mine):
                    ready.append(rec.task_id)
            if ready:
                conn.execute(sql.UNBLOCK, {"ids": ready})
                unblocked = True
            frontier = skipped
        return unblocked

    @staticmethod
    def _blocked_dependents(conn: Any, frontier: set[tuple[str, str]]) -> list[Any]:
        """The blocked PENDING tasks with an edge to one of ``frontier``'s (job, task name).

        One query per chunk of jobs, not one per job: ending many one-task jobs at once
        (a batch of infeasible submissions) cost a query each. "job in J and name in N"
        is what the edge index answers; the rows it over-selects (a name of another job
        of the chunk) are dropped here.
        """
        found: dict[str, Any] = {}
        jobs = sorted({job_id for job_id, _ in frontier})
        for i in range(0, len(jobs), 500):
            chunk = jobs[i : i + 500]
            names = sorted({name for job_id, name in frontier if job_id in set(chunk)})
            rows = conn.execute(sql.BLOCKED_DEPENDENTS, {"jobs": chunk, "names": names}).all()
            for row in rows:
                if (row.job_id, row.upstream_name) in frontier:
                    found.setdefault(row.task_id, row)
        return sorted(found.values(), key=lambda row: row.seq)

    def _jobs_with_workdir(self, conn: Any, job_ids: set[str]) -> set[str]:
        if not job_ids:
            return set()
        return set(conn.execute(sql.JOBS_WITH_WORKDIR, {"jobs": sorted(job_ids)}).scalars())

    @staticmethod
    def _gang_assign(rec: TaskRecord, rank: int, has_workdir: bool) -> Assign:
        slot = rec.ranks[rank]
        return Assign(
            rec.task_id,
            rec.job_id,
            rec.attempt,
            rec.spec,
            slot.gpu_indices,
            has_workdir,
            rank=rank,
            num_nodes=len(rec.ranks),
            node_addresses=tuple(r.address for r in rec.ranks),
        )

    def _release(self, task_id: str, attempt: int, num_nodes: int = 1) -> None:
        self._release_all([(task_id, attempt, num_nodes)])

    def _release_all(self, items: Sequence[tuple[str, int, int]]) -> None:
        """Free these attempts' allocations and mark them released, batched with concurrent callers."""
        if self._broker is None or not items:
            return
        self._releases.release(items)
        self.capacity_freed()

    def _mark_released(self, attempts: list[tuple[str, int]]) -> None:
        with self._engine.begin() as conn:
            conn.execute(sql.MARK_RELEASED, {"keys": attempts})

    @staticmethod
    def _rank_ids(item: tuple[str, int, int]) -> list[str]:
        task_id, attempt, num_nodes = item
        return [rank_allocation_id(f"{task_id}/{attempt}", r) for r in range(max(1, num_nodes))]
