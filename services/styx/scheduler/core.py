"""Scheduler logic: jobs and tasks, the dispatch loop, agent reports, retries, events, logs.

The store is the truth; nothing lives only in this process's memory, so the scheduler can
be killed at any point and several replicas can share one PostgreSQL.

A dispatch pass reads the ready set (PENDING, dependencies met, backoff over) ordered by
priority then submission order, asks the broker to place the whole batch at once, and
records the placements. A task the broker cannot place now waits without blocking smaller
tasks behind it, until it has waited ``starvation_s`` (see ``_starvation_cut``); a task no
provider could ever fit fails with the broker's reason. Assignments reach agents through
their WorkStreams; a reconnecting agent is re-sent what it has not finished.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound
from styx.common.ids import new_id
from styx.common.migrations import upgrade
from styx.common.resources import Resources
from styx.common.timeutil import now
from styx.scheduler import tables as t
from styx.scheduler.model import (
    ACTIVE,
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SCHEDULED,
    SKIPPED,
    SUCCEEDED,
    TERMINAL,
    Event,
    TaskRecord,
    TaskSpec,
    resources_from_json,
    resources_to_json,
    validate_job,
)
from styx.scheduler.stats import JobView, Stats, compute_stats, job_state
from styx.scheduler.workqueue import Assign, Cancel, Dispatcher, WorkItem

log = logging.getLogger(__name__)

DISPATCH_BATCH = 2000
# A task re-queued this many times because its node was lost fails instead.
MAX_NODE_LOSSES = 3
MAX_WORKDIR_BYTES = 64 * 1024 * 1024
# How often a work stream re-reads its node's outstanding work from the store.
STREAM_RESYNC_S = 1.0
_EVENT_FOR_STATE = {
    SCHEDULED: "SCHEDULED",
    RUNNING: "STARTED",
    SUCCEEDED: "SUCCEEDED",
    FAILED: "FAILED",
    CANCELLED: "CANCELLED",
    SKIPPED: "SKIPPED",
}
IsActive = Callable[[], bool]


@dataclass(frozen=True)
class PlacementAsk:
    """A task attempt to place."""

    allocation_id: str
    task_id: str
    resources: Resources


@dataclass(frozen=True)
class PlacementResult:
    """The broker's answer for one ask: "placed", "waiting" or "infeasible"."""

    allocation_id: str
    outcome: str
    node_id: str = ""
    gpu_indices: tuple[int, ...] = ()
    reason: str = ""


class BrokerPort(Protocol):
    """What the scheduler needs from the resource broker (gRPC adapter in production)."""

    def allocate(self, asks: Sequence[PlacementAsk]) -> list[PlacementResult]:
        """Place asks in order."""
        ...

    def release(self, allocation_id: str) -> None:
        """Free an allocation (idempotent)."""
        ...

    def lost_nodes(self) -> set[str]:
        """Ids of nodes the broker marked LOST (their lease expired)."""
        ...


def _row_to_task(row: Any) -> TaskRecord:
    return TaskRecord(
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


class Scheduler:
    """Owns jobs and tasks. Thread-safe: state transitions happen in transactions under one lock."""

    def __init__(
        self,
        engine: Engine,
        broker: BrokerPort | None,
        starvation_s: float = 60.0,
        lease_s: float = 10.0,
        replica_id: str = "",
    ) -> None:
        self._engine = engine
        self._broker = broker
        self.starvation_s = starvation_s
        self._lease_s = lease_s
        self.replica_id = replica_id or new_id("replica")
        self._lease_until = 0.0
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.dispatcher = Dispatcher()
        upgrade(engine, "scheduler")
        with engine.begin() as conn:
            if conn.execute(select(t.counters.c.value).where(t.counters.c.name == "task_seq")).first() is None:
                start = int(conn.execute(select(func.coalesce(func.max(t.tasks.c.seq), 0))).scalar_one())
                try:
                    with conn.begin_nested():
                        conn.execute(insert(t.counters).values(name="task_seq", value=start))
                except IntegrityError:
                    pass  # another replica created it first

    # ---- replicas ------------------------------------------------------------------------
    def _reserve_seqs(self, conn: Any, count: int) -> int:
        """Reserve ``count`` consecutive submission numbers; returns the first."""
        value = conn.execute(
            update(t.counters)
            .where(t.counters.c.name == "task_seq")
            .values(value=t.counters.c.value + count)
            .returning(t.counters.c.value)
        ).scalar_one()
        return int(value) - count + 1

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
        stamp = now()
        if stamp < self._lease_until - self._lease_s / 2:
            return True
        until = stamp + self._lease_s
        with self._engine.begin() as conn:
            taken = conn.execute(
                update(t.leases)
                .where(
                    and_(
                        t.leases.c.name == "dispatcher",
                        or_(t.leases.c.holder == self.replica_id, t.leases.c.expires_at < stamp),
                    )
                )
                .values(holder=self.replica_id, expires_at=until)
            ).rowcount
            if not taken:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(t.leases).values(name="dispatcher", holder=self.replica_id, expires_at=until)
                        )
                    taken = 1
                except IntegrityError:
                    taken = 0
        self._lease_until = until if taken else 0.0
        return bool(taken)

    # ---- submission ---------------------------------------------------------------------
    def submit_job(
        self, request_id: str, name: str, specs: list[TaskSpec], workdir: bytes = b""
    ) -> tuple[str, list[TaskRecord]]:
        """Store a job's tasks as PENDING; a repeated request_id returns the first job."""
        if not request_id or len(request_id) > 128:
            raise InvalidArgument("request_id: required, 1-128 characters (a UUID is fine)")
        if len(workdir) > MAX_WORKDIR_BYTES:
            raise InvalidArgument(
                f"job.workdir_archive: {len(workdir) / 2**20:.1f} MiB is over the "
                f"{MAX_WORKDIR_BYTES // 2**20} MiB limit; exclude large files with .styxignore"
            )
        existing = self._job_by_request(request_id)
        if existing is not None:
            return existing, self.list_tasks(job_id=existing, limit=10**6, oldest_first=True)
        specs = validate_job(specs)
        stamp = now()
        job_id = new_id("j")
        job_name = name or specs[0].name
        try:
            with self._lock, self._engine.begin() as conn:
                conn.execute(
                    insert(t.jobs).values(job_id=job_id, request_id=request_id, name=job_name, created_at=stamp)
                )
                first = self._reserve_seqs(conn, len(specs))
                records = [
                    TaskRecord(new_id("t"), job_id, first + i, spec, PENDING, created_at=stamp, job_name=job_name)
                    for i, spec in enumerate(specs)
                ]
                if workdir:
                    conn.execute(insert(t.workdirs).values(job_id=job_id, data=workdir))
                conn.execute(
                    insert(t.tasks),
                    [
                        {
                            "task_id": r.task_id,
                            "job_id": job_id,
                            "seq": r.seq,
                            "name": r.spec.name,
                            "spec_json": r.spec.to_json(),
                            "resources_json": resources_to_json(r.spec.resources),
                            "priority": r.spec.priority,
                            "state": PENDING,
                            "blocked": bool(r.spec.depends_on),
                            "attempt": 0,
                            "node_id": "",
                            "gpu_indices_json": "[]",
                            "failure_reason": "",
                            "agent_ended": False,
                            "released": False,
                            "created_at": stamp,
                            "failures": 0,
                            "node_losses": 0,
                        }
                        for r in records
                    ],
                )
                edges = [
                    {"job_id": job_id, "task_id": r.task_id, "dep_name": dep}
                    for r in records
                    for dep in r.spec.depends_on
                ]
                if edges:
                    conn.execute(insert(t.deps), edges)
                self._record_events(conn, [("SUBMITTED", r, "") for r in records])
        except IntegrityError:
            # Lost a race with the same request_id (another call or replica): answer with the winner.
            winner = self._job_by_request(request_id)
            if winner is None:
                raise
            return winner, self.list_tasks(job_id=winner, limit=10**6, oldest_first=True)
        self._notify()
        self.wake()
        return job_id, records

    def _job_by_request(self, request_id: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(select(t.jobs.c.job_id).where(t.jobs.c.request_id == request_id)).scalar()

    # ---- reads ---------------------------------------------------------------------------
    def get_task(self, task_id: str) -> TaskRecord:
        """One task; NotFound when unknown."""
        if not task_id:
            raise InvalidArgument("task_id: required")
        with self._engine.connect() as conn:
            row = conn.execute(
                select(t.tasks, t.jobs.c.name.label("job_name"))
                .join(t.jobs, t.jobs.c.job_id == t.tasks.c.job_id)
                .where(t.tasks.c.task_id == task_id)
            ).first()
        if row is None:
            raise NotFound(f"task {task_id!r} not found; `sky status` lists tasks")
        rec = _row_to_task(row)
        rec.job_name = row.job_name
        return rec

    def list_tasks(
        self, job_id: str = "", states: Sequence[str] = (), limit: int = 1000, oldest_first: bool = False
    ) -> list[TaskRecord]:
        """Tasks, newest first unless oldest_first."""
        query = select(t.tasks, t.jobs.c.name.label("job_name")).join(t.jobs, t.jobs.c.job_id == t.tasks.c.job_id)
        if job_id:
            query = query.where(t.tasks.c.job_id == job_id)
        if states:
            query = query.where(t.tasks.c.state.in_(list(states)))
        query = query.order_by(t.tasks.c.seq.asc() if oldest_first else t.tasks.c.seq.desc()).limit(limit)
        with self._engine.connect() as conn:
            out = []
            for row in conn.execute(query):
                rec = _row_to_task(row)
                rec.job_name = row.job_name
                out.append(rec)
            return out

    def get_job(self, job_id: str) -> JobView:
        """A job with its tasks; NotFound when unknown."""
        if not job_id:
            raise InvalidArgument("job_id: required")
        with self._engine.connect() as conn:
            job = conn.execute(select(t.jobs).where(t.jobs.c.job_id == job_id)).first()
        if job is None:
            raise NotFound(f"job {job_id!r} not found; `sky queue` lists jobs")
        tasks = self.list_tasks(job_id=job_id, limit=10**6, oldest_first=True)
        counts: dict[str, int] = {}
        for rec in tasks:
            counts[rec.state] = counts.get(rec.state, 0) + 1
        return JobView(job.job_id, job.name, job_state(counts), counts, job.created_at, tuple(tasks))

    def list_jobs(self, limit: int = 100) -> list[JobView]:
        """Jobs, newest first, with task counts."""
        with self._engine.connect() as conn:
            jobs = conn.execute(select(t.jobs).order_by(t.jobs.c.created_at.desc()).limit(limit)).all()
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

    def get_workdir(self, job_id: str) -> bytes:
        """The job's workdir archive (b"" when it has none); NotFound for an unknown job."""
        with self._engine.connect() as conn:
            if conn.execute(select(t.jobs.c.job_id).where(t.jobs.c.job_id == job_id)).first() is None:
                raise NotFound(f"job {job_id!r} not found")
            data = conn.execute(select(t.workdirs.c.data).where(t.workdirs.c.job_id == job_id)).scalar()
        return bytes(data or b"")

    # ---- dispatch ------------------------------------------------------------------------
    def wake(self) -> None:
        """Ask the dispatch loop for a pass now (new work, freed capacity, new node)."""
        self._wake.set()

    def run_loop(self, idle_wait_s: float = 0.5, reconcile_every_s: float = 2.0) -> None:
        """Dispatch until stop(); passes run on wake-ups and at least every idle_wait_s."""
        last_reconcile = 0.0
        while not self._stop.is_set():
            self._wake.wait(idle_wait_s)
            self._wake.clear()
            try:
                while self.dispatch_once() and not self._stop.is_set():
                    pass
                if now() - last_reconcile >= reconcile_every_s:
                    last_reconcile = now()
                    self.reconcile()
            except Exception:
                log.exception("dispatch pass failed; retrying")
                self._stop.wait(1.0)

    def stop(self) -> None:
        """End run_loop, wake every waiting stream, and hand the dispatch lease back."""
        self._stop.set()
        self._wake.set()
        self._notify()
        self.release_dispatch_lease()

    def release_dispatch_lease(self) -> None:
        """Give the lease up so a successor (restart or other replica) dispatches at once."""
        if not self._lease_until:
            return
        self._lease_until = 0.0
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    update(t.leases)
                    .where(and_(t.leases.c.name == "dispatcher", t.leases.c.holder == self.replica_id))
                    .values(expires_at=0.0)
                )
        except Exception as exc:
            log.warning("could not release the dispatch lease; it expires by itself: %s", exc)

    def dispatch_once(self) -> int:
        """One pass over the ready set; returns how many tasks were placed.

        The pass reads only the light columns of the ready set (ids, attempt, resources)
        and parses full specs only for what the broker placed, so a pass over a deep
        queue costs little more than the broker's decisions.
        """
        if self._broker is None or not self.hold_dispatch_lease():
            return 0
        stamp = now()
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(t.tasks.c.task_id, t.tasks.c.attempt, t.tasks.c.created_at, t.tasks.c.retry_at,
                       t.tasks.c.resources_json)
                .where(
                    and_(
                        t.tasks.c.state == PENDING,
                        t.tasks.c.blocked.is_(False),
                        or_(t.tasks.c.retry_at.is_(None), t.tasks.c.retry_at <= stamp),
                    )
                )
                .order_by(t.tasks.c.priority.desc(), t.tasks.c.seq.asc())
                .limit(DISPATCH_BATCH)
            ).all()  # fmt: skip
        if not rows:
            return 0
        rows = self._starvation_cut(rows, stamp)
        asks = [PlacementAsk(f"{r[0]}/{r[1] + 1}", r[0], resources_from_json(r[4])) for r in rows]
        results = self._broker.allocate(asks)
        placed = {r.allocation_id: r for r in results if r.outcome == "placed"}
        infeasible = {r.allocation_id.rsplit("/", 1)[0]: r for r in results if r.outcome == "infeasible"}
        if not placed and not infeasible:
            return 0
        orphans = self._apply_placements(placed, infeasible)
        for allocation_id in orphans:
            self._broker.release(allocation_id)
        return len(placed) - len(orphans)

    def _starvation_cut(self, ready: list[Any], stamp: float) -> list[Any]:
        """Apply the anti-starvation rule to a ready list in priority order.

        Rule: a task that does not fit never blocks the tasks behind it; they are placed
        around it ("backfill") until it has waited ``starvation_s``. From then on nothing
        behind it is offered to the broker, so capacity that frees up goes to it first.
        """
        for i, row in enumerate(ready):
            if stamp - (row.retry_at or row.created_at) > self.starvation_s:
                return ready[: i + 1]
        return ready

    def _apply_placements(
        self, placed: dict[str, PlacementResult], infeasible: dict[str, PlacementResult]
    ) -> list[str]:
        """Record placements (allocation id -> result) and infeasible tasks (task id -> result).

        Returns the allocation ids placed for tasks that stopped being PENDING meanwhile
        (cancelled), which the caller releases.
        """
        stamp = now()
        sends: list[tuple[str, Assign]] = []
        ended: list[TaskRecord] = []
        events: list[tuple[str, TaskRecord, str]] = []
        wanted = {alloc.rsplit("/", 1)[0] for alloc in placed} | set(infeasible)
        with self._lock, self._engine.begin() as conn:
            # Filter the state in Python: with "state = PENDING" in the WHERE clause SQLite
            # prefers the state index and scans every pending task instead of the few ids.
            rows = conn.execute(select(t.tasks).where(t.tasks.c.task_id.in_(sorted(wanted))).with_for_update()).all()
            pending = {row.task_id: _row_to_task(row) for row in rows if row.state == PENDING}
            with_workdir = self._jobs_with_workdir(conn, {rec.job_id for rec in pending.values()})
            orphans = [alloc for alloc in placed if alloc.rsplit("/", 1)[0] not in pending]
            updates = []
            for alloc, res in placed.items():
                rec = pending.get(alloc.rsplit("/", 1)[0])
                if rec is None or f"{rec.task_id}/{rec.attempt + 1}" != alloc:
                    continue
                rec.state, rec.attempt, rec.node_id = SCHEDULED, rec.attempt + 1, res.node_id
                rec.gpu_indices, rec.scheduled_at, rec.failure_reason = res.gpu_indices, stamp, ""
                updates.append(
                    {
                        "k_task_id": rec.task_id,
                        "state": SCHEDULED,
                        "attempt": rec.attempt,
                        "node_id": res.node_id,
                        "gpu_indices_json": json.dumps(list(res.gpu_indices)),
                        "scheduled_at": stamp,
                        "agent_ended": False,
                        "released": False,
                        # A retry's "why" was for the previous attempt; the new one starts clean.
                        "failure_reason": "",
                    }
                )
                events.append(("SCHEDULED", rec, f"on {res.node_id}"))
                item = Assign(
                    rec.task_id, rec.job_id, rec.attempt, rec.spec, res.gpu_indices, rec.job_id in with_workdir
                )
                sends.append((res.node_id, item))
            if updates:
                conn.execute(update(t.tasks).where(t.tasks.c.task_id == bindparam("k_task_id")), updates)
            for task_id, res in infeasible.items():
                rec = pending.get(task_id)
                if rec is not None:
                    self._finish(conn, rec, FAILED, None, res.reason, stamp, events, agent_ended=True, released=True)
                    ended.append(rec)
            self._resolve_dependents(conn, ended, events)
            self._record_events(conn, events)
        for node_id, item in sends:
            self.dispatcher.send(node_id, item)
        self.wake()
        self._notify()
        return orphans

    def _jobs_with_workdir(self, conn: Any, job_ids: set[str]) -> set[str]:
        if not job_ids:
            return set()
        return set(conn.execute(select(t.workdirs.c.job_id).where(t.workdirs.c.job_id.in_(job_ids))).scalars())

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
        conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(**values))
        rec.state, rec.exit_code, rec.failure_reason, rec.finished_at = state, exit_code, reason, stamp
        events.append((_EVENT_FOR_STATE[state], rec, reason))

    def _requeue(
        self, conn: Any, rec: TaskRecord, retry_at: float | None, reason: str, events: list[Any], **counters: int
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
                **counters,
            )
        )
        rec.state, rec.retry_at, rec.failure_reason = PENDING, retry_at, reason
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
            by_job: dict[str, list[str]] = {}
            for job_id, name in frontier:
                by_job.setdefault(job_id, []).append(name)
            for job_id, names in by_job.items():
                dependents = conn.execute(
                    select(t.tasks)
                    .join(t.deps, t.deps.c.task_id == t.tasks.c.task_id)
                    .where(
                        and_(
                            t.deps.c.job_id == job_id,
                            t.deps.c.dep_name.in_(names),
                            t.tasks.c.state == PENDING,
                            t.tasks.c.blocked.is_(True),
                        )
                    )
                    .distinct()
                ).all()
                if not dependents:
                    continue
                upstream = t.tasks.alias("upstream")
                dep_rows = conn.execute(
                    select(t.deps.c.task_id, upstream.c.name, upstream.c.state, upstream.c.failure_reason)
                    .join(upstream, and_(upstream.c.job_id == t.deps.c.job_id, upstream.c.name == t.deps.c.dep_name))
                    .where(t.deps.c.task_id.in_([r.task_id for r in dependents]))
                ).all()
                deps: dict[str, list[Any]] = {}
                for row in dep_rows:
                    deps.setdefault(row.task_id, []).append(row)
                ready: list[str] = []
                for row in dependents:
                    rec = _row_to_task(row)
                    mine = sorted(deps.get(rec.task_id, []), key=lambda d: d.name)
                    bad = [d for d in mine if d.state in TERMINAL and d.state != SUCCEEDED]
                    if bad:
                        why = f"upstream task {bad[0].name!r} ended {bad[0].state}"
                        if bad[0].failure_reason:
                            why += f": {bad[0].failure_reason}"
                        self._finish(conn, rec, SKIPPED, None, why, now(), events, agent_ended=True, released=True)
                        skipped.add((job_id, rec.spec.name))
                    elif all(d.state == SUCCEEDED for d in mine):
                        ready.append(rec.task_id)
                if ready:
                    conn.execute(update(t.tasks).where(t.tasks.c.task_id.in_(ready)).values(blocked=False))
                    unblocked = True
            frontier = skipped
        return unblocked

    # ---- cancel ------------------------------------------------------------------------
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
            self._finish(
                conn, rec, CANCELLED, None, "cancelled by user", now(), events, agent_ended=idle, released=idle
            )
            self._resolve_dependents(conn, [rec], events)
            self._record_events(conn, events)
        if was in ACTIVE:
            self.dispatcher.send(rec.node_id, Cancel(rec.task_id, rec.attempt, "cancelled by user"))
        self.wake()
        self._notify()
        return rec

    def cancel_job(self, job_id: str) -> JobView:
        """Cancel every unfinished task of a job, dependents first (so none ends SKIPPED)."""
        job = self.get_job(job_id)
        for rec in sorted(job.tasks, key=lambda r: -r.seq):
            if rec.state not in TERMINAL:
                self.cancel_task(rec.task_id)
        return self.get_job(job_id)

    # ---- agents ------------------------------------------------------------------------
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
            with_workdir = self._jobs_with_workdir(conn, {r.job_id for r in rows})
        items: list[WorkItem] = []
        for row in rows:
            rec = _row_to_task(row)
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
        self.wake()  # a new node may unblock waiting tasks
        sent: set[tuple[str, str, int]] = set()
        try:
            resync_at = 0.0
            while is_active() and not self._stop.is_set():
                if now() >= resync_at:
                    resync_at = now() + STREAM_RESYNC_S
                    for item in self.outstanding_work(node_id):
                        if item.key not in sent:
                            sent.add(item.key)
                            yield item
                try:
                    pushed = q.get(timeout=max(0.01, resync_at - now()))
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
        self, node_id: str, task_id: str, attempt: int, state: str, exit_code: int | None, message: str
    ) -> TaskRecord:
        """Apply an agent's report about an attempt; idempotent."""
        if state not in (RUNNING, SUCCEEDED, FAILED, CANCELLED):
            raise InvalidArgument(f"state: agents report RUNNING, SUCCEEDED, FAILED or CANCELLED, got {state}")
        events: list[tuple[str, TaskRecord, str]] = []
        release = False
        ended: list[TaskRecord] = []
        with self._lock, self._engine.begin() as conn:
            rec = self.get_task(task_id)
            if attempt != rec.attempt:
                raise FailedPrecondition(
                    f"attempt: task {task_id} is at attempt {rec.attempt}, report was for attempt {attempt}"
                )
            stamp = now()
            if state == RUNNING:
                if rec.state == SCHEDULED:
                    conn.execute(
                        update(t.tasks).where(t.tasks.c.task_id == task_id).values(state=RUNNING, started_at=stamp)
                    )
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
                    conn.execute(update(t.tasks).where(t.tasks.c.task_id == task_id).values(failures=failures))
                    ended = [rec]
                release = True
            elif rec.state in TERMINAL and not self._agent_ended(conn, task_id):
                # E.g. cancelled by a user: the agent now confirms its process group is gone.
                conn.execute(update(t.tasks).where(t.tasks.c.task_id == task_id).values(agent_ended=True))
                release = True
            self._resolve_dependents(conn, ended, events)
            self._record_events(conn, events)
        if release:
            self._release(rec.task_id, attempt)
        self.wake()
        self._notify()
        return rec

    def _agent_ended(self, conn: Any, task_id: str) -> bool:
        return bool(conn.execute(select(t.tasks.c.agent_ended).where(t.tasks.c.task_id == task_id)).scalar())

    def _release(self, task_id: str, attempt: int) -> None:
        if self._broker is None:
            return
        try:
            self._broker.release(f"{task_id}/{attempt}")
        except Exception as exc:
            log.warning("release of %s/%s failed, will retry: %s", task_id, attempt, exc)
            return
        with self._engine.begin() as conn:
            conn.execute(
                update(t.tasks)
                .where(and_(t.tasks.c.task_id == task_id, t.tasks.c.attempt == attempt))
                .values(released=True)
            )
        self.wake()

    # ---- reconciliation ------------------------------------------------------------------
    def reconcile(self) -> None:
        """Level-triggered repairs: re-queue work of lost nodes, retry failed releases."""
        if self._broker is None or not self.hold_dispatch_lease():
            return
        try:
            lost = self._broker.lost_nodes()
        except Exception as exc:
            log.warning("cannot list lost nodes: %s", exc)
            lost = set()
        if lost:
            self._requeue_lost(lost)
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(t.tasks.c.task_id, t.tasks.c.attempt)
                .where(and_(t.tasks.c.agent_ended.is_(True), t.tasks.c.released.is_(False), t.tasks.c.attempt > 0))
                .limit(500)
            ).all()
        for task_id, attempt in rows:
            self._release(task_id, attempt)

    def _requeue_lost(self, lost: set[str]) -> None:
        events: list[tuple[str, TaskRecord, str]] = []
        ended: list[TaskRecord] = []
        to_release: list[tuple[str, int]] = []
        with self._lock, self._engine.begin() as conn:
            rows = conn.execute(
                select(t.tasks, t.tasks.c.node_losses.label("losses"))
                .where(and_(t.tasks.c.node_id.in_(sorted(lost)), t.tasks.c.agent_ended.is_(False)))
                .with_for_update()
            ).all()
            stamp = now()
            for row in rows:
                rec = _row_to_task(row)
                to_release.append((rec.task_id, rec.attempt))
                why = f"node {rec.node_id} was lost (no heartbeat)"
                if rec.state not in ACTIVE:
                    conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(agent_ended=True))
                elif row.losses + 1 > MAX_NODE_LOSSES:
                    why += f"; gave up after {MAX_NODE_LOSSES} lost nodes"
                    self._finish(conn, rec, FAILED, None, why, stamp, events, agent_ended=True)
                    ended.append(rec)
                else:
                    self._requeue(conn, rec, None, why, events, node_losses=row.losses + 1)
            self._resolve_dependents(conn, ended, events)
            self._record_events(conn, events)
        for task_id, attempt in to_release:
            self._release(task_id, attempt)
        self.wake()
        if rows:
            log.warning("re-queued work of lost nodes", extra={"nodes": sorted(lost), "tasks": len(rows)})
            self._notify()

    # ---- logs --------------------------------------------------------------------------
    def append_logs(self, task_id: str, attempt: int, offset: int, data: bytes) -> int:
        """Store output at offset; bytes already stored are ignored. Returns the new length."""
        with self._lock, self._engine.begin() as conn:
            last = conn.execute(
                select(t.logs.c.offset, func.length(t.logs.c.data))
                .where(and_(t.logs.c.task_id == task_id, t.logs.c.attempt == attempt))
                .order_by(t.logs.c.offset.desc())
                .limit(1)
            ).first()
            length = int(last[0] + last[1]) if last else 0
            if offset > length:
                raise FailedPrecondition(f"offset: {offset} leaves a gap; the stored log ends at {length}")
            rest = data[length - offset :]
            if rest:
                conn.execute(insert(t.logs).values(task_id=task_id, attempt=attempt, offset=length, data=rest))
                length += len(rest)
        if rest:
            self._notify()
        return length

    def stream_logs(
        self, task_id: str, attempt: int, offset: int, follow: bool, is_active: IsActive
    ) -> Iterator[tuple[int, int, bytes]]:
        """Yield (attempt, offset, data) chunks; with follow, until the attempt's output is complete."""
        rec = self.get_task(task_id)
        pos = offset
        current = attempt or rec.attempt
        while not self._stop.is_set() and is_active():
            if current:
                with self._engine.connect() as conn:
                    chunks = conn.execute(
                        select(t.logs.c.offset, t.logs.c.data)
                        .where(
                            and_(
                                t.logs.c.task_id == task_id,
                                t.logs.c.attempt == current,
                                t.logs.c.offset + func.length(t.logs.c.data) > pos,
                            )
                        )
                        .order_by(t.logs.c.offset)
                    ).all()
                for chunk_offset, data in chunks:
                    start = max(0, pos - chunk_offset)
                    yield current, pos, bytes(data[start:])
                    pos = chunk_offset + len(data)
            if not follow or self._output_complete(task_id, current):
                return
            with self._changed:
                self._changed.wait(0.5)
            if attempt == 0:
                latest = self.get_task(task_id).attempt
                if latest != current:
                    current, pos = latest, 0

    def _output_complete(self, task_id: str, attempt: int) -> bool:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(t.tasks.c.state, t.tasks.c.agent_ended, t.tasks.c.attempt, t.tasks.c.finished_at).where(
                    t.tasks.c.task_id == task_id
                )
            ).first()
        if row is None or row.state not in TERMINAL:
            return False
        if row.attempt != attempt or row.agent_ended:
            return True
        # Cancelled on a node whose agent never confirmed: stop waiting after a grace period.
        return row.finished_at is not None and now() - row.finished_at > 10.0

    # ---- events ------------------------------------------------------------------------
    def _record_events(self, conn: Any, events: list[tuple[str, TaskRecord, str]]) -> None:
        if not events:
            return
        if conn.dialect.name == "postgresql":
            # Serialize event writers across replicas until commit, so seq order is commit
            # order and a watcher that read seq N can never later find an uncommitted N-1.
            conn.execute(text("SELECT pg_advisory_xact_lock(717001)"))
        stamp = now()
        conn.execute(
            insert(t.events),
            [
                {
                    "time": stamp,
                    "type": kind,
                    "job_id": rec.job_id,
                    "task_id": rec.task_id,
                    "state": rec.state,
                    "attempt": rec.attempt,
                    "node_id": rec.node_id,
                    "message": message,
                }
                for kind, rec, message in events
            ],
        )

    def events_after(
        self, after_seq: int, job_id: str = "", task_id: str = "", states: Sequence[str] = (), limit: int = 500
    ) -> list[Event]:
        """Recorded events with seq > after_seq, oldest first."""
        query = select(t.events).where(t.events.c.seq > after_seq)
        if job_id:
            query = query.where(t.events.c.job_id == job_id)
        if task_id:
            query = query.where(t.events.c.task_id == task_id)
        if states:
            query = query.where(t.events.c.state.in_(list(states)))
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(t.events.c.seq).limit(limit)).all()
        return [
            Event(r.seq, r.time, r.type, r.job_id, r.task_id, r.state, r.attempt, r.node_id, r.message) for r in rows
        ]

    def watch_events(
        self,
        after_seq: int,
        job_id: str,
        task_id: str,
        follow: bool,
        is_active: IsActive,
        states: Sequence[str] = (),
    ) -> Iterator[Event]:
        """Yield events after the cursor; with follow, keep yielding new ones.

        Events get their seq in commit order (one writer at a time: SQLite's write lock, or
        an advisory lock on PostgreSQL), so a client resuming from the last seq it saw
        misses nothing and sees nothing twice.
        """
        cursor = after_seq
        while not self._stop.is_set() and is_active():
            batch = self.events_after(cursor, job_id, task_id, states)
            yield from batch
            if batch:
                cursor = batch[-1].seq
                continue
            if not follow:
                return
            with self._changed:
                self._changed.wait(0.5)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ---- stats -------------------------------------------------------------------------
    def count_by_state(self) -> dict[str, int]:
        """Number of tasks per state (for metrics)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.tasks.c.state, func.count()).group_by(t.tasks.c.state)).all()
        return {state: int(n) for state, n in rows}

    def stats(self) -> Stats:
        """Counts by state, latency percentiles and throughput (see stats.compute_stats)."""
        return compute_stats(self._engine)
