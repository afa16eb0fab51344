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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, and_, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound
from styx.common.group_commit import GroupCommit
from styx.common.ids import new_id
from styx.common.leases import Lease
from styx.common.migrations import upgrade
from styx.common.placement import Ask, Placement, rank_allocation_id
from styx.common.store import bulk_insert
from styx.scheduler import statements as sql
from styx.scheduler import tables as t
from styx.scheduler.gangs import GangMixin
from styx.scheduler.model import (
    ACTIVE,
    CANCELLED,
    DEFAULT_NODE_FENCE_S,
    FAILED,
    MAX_NODE_LOSSES,
    PENDING,
    RUNNING,
    SCHEDULED,
    SKIPPED,
    SUCCEEDED,
    TERMINAL,
    AbsentNode,
    IsActive,
    RankRecord,
    TaskRecord,
    TaskSpec,
    resources_from_json,
    resources_to_json,
    validate_job,
)
from styx.scheduler.outputs import OutputsMixin
from styx.scheduler.queries import QueriesMixin, row_to_task
from styx.scheduler.releases import ReleaseBatcher
from styx.scheduler.stats import JobView, Stats, compute_stats
from styx.scheduler.workqueue import Assign, Cancel, Dispatcher, WorkItem

log = logging.getLogger(__name__)

DISPATCH_BATCH = 2000
# However a pass is woken, the whole ready set goes to the broker at least this often, so a
# capacity change this process cannot see (another replica's release, a node the broker
# booted, a cluster torn down) is found within this time.
FULL_PASS_S = 0.5
MAX_WORKDIR_BYTES = 64 * 1024 * 1024
# Most tasks one SubmitJob group-commit round writes (one transaction; a bigger job goes alone).
MAX_GROUP_TASKS = 2000
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


class BrokerPort(Protocol):
    """What the scheduler needs from the resource broker (gRPC adapter in production)."""

    def allocate(self, asks: Sequence[Ask]) -> list[Placement]:
        """Place asks in order."""
        ...

    def release(self, allocation_id: str) -> None:
        """Free an allocation (idempotent)."""
        ...

    def release_many(self, allocation_ids: list[str]) -> None:
        """Free allocations in one call (idempotent)."""
        ...

    def absent_nodes(self) -> list[AbsentNode]:
        """Nodes the broker marked LOST (lease expired) or GONE (deregistered)."""
        ...


@dataclass(frozen=True)
class _Submission:
    """One SubmitJob's validated job, waiting for its group-commit round."""

    job_id: str
    request_id: str
    name: str
    specs: list[TaskSpec]
    workdir: bytes


def _task_row(r: TaskRecord, stamp: float) -> dict[str, Any]:
    """A new task's row in the tasks table."""
    return {
        "task_id": r.task_id,
        "job_id": r.job_id,
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
        "num_nodes": r.spec.num_nodes,
        "ranks_json": "",
    }


class Scheduler(QueriesMixin, GangMixin, OutputsMixin):
    """Owns jobs and tasks. Thread-safe: state transitions happen in transactions under one lock."""

    def __init__(
        self,
        engine: Engine,
        broker: BrokerPort | None,
        starvation_s: float = 60.0,
        lease_s: float = 10.0,
        replica_id: str = "",
        clock: Clock = SYSTEM_CLOCK,
        node_fence_s: float = DEFAULT_NODE_FENCE_S,
    ) -> None:
        self._clock = clock
        self.node_fence_s = node_fence_s
        self._engine = engine
        self._broker = broker
        self.starvation_s = starvation_s
        self.replica_id = replica_id or new_id("replica")
        self._dispatch_lease = Lease(engine, t.leases, "dispatcher", self.replica_id, lease_s, clock)
        self._releases = ReleaseBatcher(
            lambda ids: broker.release_many(ids) if broker is not None else None, self._mark_released, self._rank_ids
        )
        # SubmitJob rounds: a round's weight is its tasks (a bounded transaction).
        self._submits: GroupCommit[_Submission, list[TaskRecord] | str] = GroupCommit(
            self._write_submissions, max_weight=MAX_GROUP_TASKS, weight=lambda sub: len(sub.specs)
        )
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Incremental dispatch: the broker's "waiting" answers stay true until capacity may
        # have grown, so a pass re-sends them only after a release, a new node or FULL_PASS_S
        # (see dispatch_once). A cache of answers, not state: losing it costs one full pass.
        self._capacity_epoch = 0
        self._waiting: set[str] = set()
        self._waiting_epoch = -1
        self._full_pass_at = float("-inf")
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
        return self._dispatch_lease.hold()

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
        specs = validate_job(specs)
        job_name = name or specs[0].name
        sub = _Submission(new_id("j"), request_id, job_name, specs, workdir)
        outcome = self._submits.run(sub)
        if isinstance(outcome, str):  # lost a race with the same request_id: the winner's job
            return outcome, self.list_tasks(job_id=outcome, limit=10**6, oldest_first=True)
        self._notify()
        self.wake()
        return sub.job_id, outcome

    def _write_submissions(self, subs: Sequence[_Submission]) -> list[list[TaskRecord] | str | BaseException]:
        """One group-commit round of SubmitJob: every job of the round in one transaction.

        A request_id already stored answers with its job (one query for the round). One
        taken meanwhile (a job of the same round, another replica) fails the transaction;
        the round is then written again one job per transaction, so only that job answers
        with the winner's id.
        """
        try:
            with self._lock, self._engine.begin() as conn:
                jobs = t.jobs.c
                taken = dict(
                    conn.execute(
                        select(jobs.request_id, jobs.job_id).where(jobs.request_id.in_({s.request_id for s in subs}))
                    ).all()
                )
                fresh = [s for s in subs if s.request_id not in taken]
                written = iter(self._insert_jobs(conn, fresh) if fresh else [])
                return [taken[s.request_id] if s.request_id in taken else next(written) for s in subs]
        except IntegrityError as exc:
            if len(subs) > 1:
                return [outcome for sub in subs for outcome in self._write_submissions([sub])]
            winner = self._job_by_request(subs[0].request_id)
            return [winner if winner is not None else exc]

    def _insert_jobs(self, conn: Any, subs: Sequence[_Submission]) -> list[list[TaskRecord]]:
        stamp = self._clock.now()
        conn.execute(
            insert(t.jobs),
            [{"job_id": s.job_id, "request_id": s.request_id, "name": s.name, "created_at": stamp} for s in subs],
        )
        seq = self._reserve_seqs(conn, sum(len(s.specs) for s in subs))
        per_job: list[list[TaskRecord]] = []
        for sub in subs:
            per_job.append(
                [
                    TaskRecord(new_id("t"), sub.job_id, seq + i, spec, PENDING, created_at=stamp, job_name=sub.name)
                    for i, spec in enumerate(sub.specs)
                ]
            )
            seq += len(sub.specs)
        workdirs = [{"job_id": s.job_id, "data": s.workdir} for s in subs if s.workdir]
        if workdirs:
            conn.execute(insert(t.workdirs), workdirs)
        records = [r for job in per_job for r in job]
        bulk_insert(conn, t.tasks, [_task_row(r, stamp) for r in records])
        edges = [
            {"job_id": r.job_id, "task_id": r.task_id, "dep_name": dep} for r in records for dep in r.spec.depends_on
        ]
        bulk_insert(conn, t.deps, edges)
        self._record_events(conn, [("SUBMITTED", r, "") for r in records])
        return per_job

    def _job_by_request(self, request_id: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(select(t.jobs.c.job_id).where(t.jobs.c.request_id == request_id)).scalar()

    # ---- dispatch ------------------------------------------------------------------------
    def wake(self) -> None:
        """Ask the dispatch loop for a pass now (new work, freed capacity, new node)."""
        self._wake.set()

    def capacity_freed(self) -> None:
        """Capacity may have grown (a release, a node joined): the next pass re-sends every
        waiting task, then runs. An unlocked counter is enough: any change of it counts,
        and two bumps that race still change it."""
        self._capacity_epoch += 1
        self._wake.set()

    def run_loop(self, idle_wait_s: float = 0.5, reconcile_every_s: float = 2.0) -> None:
        """Dispatch until stop(); passes run on wake-ups and at least every idle_wait_s."""
        threading.Thread(target=self._keep_lease, name="dispatch-lease", daemon=True).start()
        last_reconcile = 0.0
        while not self._stop.is_set():
            self._clock.wait(self._wake, idle_wait_s)
            self._wake.clear()
            try:
                while self.dispatch_once(incremental=True) and not self._stop.is_set():
                    pass
                if self._clock.now() - last_reconcile >= reconcile_every_s:
                    last_reconcile = self._clock.now()
                    self.reconcile()
            except Exception:
                log.exception("dispatch pass failed; retrying")
                self._clock.wait(self._stop, 1.0)

    def _keep_lease(self) -> None:
        """Renew the dispatch lease on its own clock.

        Renewing only between dispatch passes let one slow pass (a loaded machine, a slow
        broker) outlast the lease and hand dispatching to another replica mid-run; a
        renewal every third of the lease leaves two renewals of slack.
        """
        self._dispatch_lease.keep(self._stop)

    def stop(self) -> None:
        """End run_loop, wake every waiting stream, and hand the dispatch lease back."""
        self._stop.set()
        self._wake.set()
        self._notify()
        self.release_dispatch_lease()

    def release_dispatch_lease(self) -> None:
        """Give the lease up so a successor (restart or other replica) dispatches at once."""
        self._dispatch_lease.release()

    def dispatch_once(self, incremental: bool = False) -> int:
        """One pass over the ready set; returns how many tasks were placed.

        ``incremental`` (the dispatch loop's passes) leaves out tasks the broker answered
        "waiting" since capacity last grew as far as this process knows
        (``capacity_freed``), for at most FULL_PASS_S: a pass woken by each of many
        submissions then sends the broker only the new tasks, not the whole waiting queue.

        The pass reads only the light columns of the ready set (ids, attempt, resources)
        and parses full specs only for what the broker placed, so a pass over a deep
        queue costs little more than the broker's decisions.
        """
        if self._broker is None or not self.hold_dispatch_lease():
            return 0
        stamp = self._clock.now()
        with self._engine.connect() as conn:
            rows = conn.execute(sql.READY, {"stamp": stamp, "batch": DISPATCH_BATCH}).all()
        if not rows:
            return 0
        rows = self._starvation_cut(rows, stamp)
        epoch = self._capacity_epoch
        if not incremental or epoch != self._waiting_epoch or stamp >= self._full_pass_at:
            self._waiting, self._waiting_epoch, self._full_pass_at = set(), epoch, stamp + FULL_PASS_S
        # Tasks the broker answered "waiting" since capacity last grew would wait again:
        # leave them out, so a pass woken by a submission sends only the new tasks.
        asks = [
            Ask(alloc, r[0], resources_from_json(r[4]), r[5])
            for r in rows
            if (alloc := f"{r[0]}/{r[1] + 1}") not in self._waiting
        ]
        if not asks:
            return 0
        results = self._broker.allocate(asks)
        self._waiting.update(r.allocation_id for r in results if r.outcome == "waiting")
        placed = {r.allocation_id: r for r in results if r.outcome == "placed"}
        infeasible = {r.allocation_id.rsplit("/", 1)[0]: r for r in results if r.outcome == "infeasible"}
        if not placed and not infeasible:
            return 0
        if infeasible:
            self.wake()  # tasks behind a full batch of settled ones get their pass now
        orphans = self._apply_placements(placed, infeasible)
        for allocation_id in orphans:
            for r in range(max(1, len(placed[allocation_id].nodes))):
                self._broker.release(rank_allocation_id(allocation_id, r))
        if orphans:
            self.capacity_freed()
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

    def _apply_placements(self, placed: dict[str, Placement], infeasible: dict[str, Placement]) -> list[str]:
        """Record placements (allocation id -> result) and infeasible tasks (task id -> result).

        Returns the allocation ids placed for tasks that stopped being PENDING meanwhile
        (cancelled), which the caller releases.
        """
        stamp = self._clock.now()
        sends: list[tuple[str, Assign]] = []
        ran: list[dict[str, Any]] = []
        ended: list[TaskRecord] = []
        events: list[tuple[str, TaskRecord, str]] = []
        wanted = {alloc.rsplit("/", 1)[0] for alloc in placed} | set(infeasible)
        with self._lock, self._engine.begin() as conn:
            # Filter the state in Python: with "state = PENDING" in the WHERE clause SQLite
            # prefers the state index and scans every pending task instead of the few ids.
            rows = conn.execute(sql.TASKS_FOR_UPDATE, {"ids": sorted(wanted)}).all()
            pending = {row.task_id: row_to_task(row) for row in rows if row.state == PENDING}
            with_workdir = self._jobs_with_workdir(conn, {rec.job_id for rec in pending.values()})
            orphans = [alloc for alloc in placed if alloc.rsplit("/", 1)[0] not in pending]
            updates = []
            for alloc, res in placed.items():
                rec = pending.get(alloc.rsplit("/", 1)[0])
                if rec is None or f"{rec.task_id}/{rec.attempt + 1}" != alloc:
                    continue
                rec.state, rec.attempt, rec.node_id = SCHEDULED, rec.attempt + 1, res.node_id
                rec.gpu_indices, rec.scheduled_at, rec.failure_reason = res.gpu_indices, stamp, ""
                rec.ranks = [RankRecord(n.node_id, n.gpu_indices, n.address) for n in res.nodes]
                rec.pending_retry = None
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
                        "ranks_json": rec.ranks_json(),
                    }
                )
                nodes = [r.node_id for r in rec.ranks] or [res.node_id]
                ran += [
                    {"task_id": rec.task_id, "attempt": rec.attempt, "rank": i, "node_id": n}
                    for i, n in enumerate(nodes)
                ]
                if rec.ranks:
                    events.append(("SCHEDULED", rec, "on " + ", ".join(r.node_id for r in rec.ranks)))
                    sends.extend(
                        (r.node_id, self._gang_assign(rec, i, rec.job_id in with_workdir))
                        for i, r in enumerate(rec.ranks)
                    )
                    continue
                events.append(("SCHEDULED", rec, f"on {res.node_id}"))
                item = Assign(
                    rec.task_id, rec.job_id, rec.attempt, rec.spec, res.gpu_indices, rec.job_id in with_workdir
                )
                sends.append((res.node_id, item))
            if updates:
                conn.execute(sql.UPDATE_TASK, updates)
                bulk_insert(conn, t.placements, ran)
            failed = [(pending[task_id], res.reason) for task_id, res in infeasible.items() if task_id in pending]
            if failed:  # one executemany: a pass may settle a whole batch of infeasible tasks
                conn.execute(
                    sql.UPDATE_TASK,
                    [
                        {"k_task_id": rec.task_id, "state": FAILED, "exit_code": None, "failure_reason": why,
                         "finished_at": stamp, "agent_ended": True, "released": True}
                        for rec, why in failed
                    ],
                )  # fmt: skip
                for rec, why in failed:
                    rec.state, rec.exit_code, rec.failure_reason, rec.finished_at = FAILED, None, why, stamp
                    events.append((_EVENT_FOR_STATE[FAILED], rec, why))
                    ended.append(rec)
            self._resolve_dependents(conn, ended, events)
            self._record_events(conn, events)
        for node_id, item in sends:
            self.dispatcher.send(node_id, item)
        self._notify()
        return orphans

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

    def _jobs_with_workdir(self, conn: Any, job_ids: set[str]) -> set[str]:
        if not job_ids:
            return set()
        return set(conn.execute(sql.JOBS_WITH_WORKDIR, {"jobs": sorted(job_ids)}).scalars())

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

    # ---- reconciliation ------------------------------------------------------------------
    def reconcile(self) -> None:
        """Level-triggered repairs: re-queue work of lost nodes, retry failed releases."""
        if self._broker is None or not self.hold_dispatch_lease():
            return
        try:
            absent = self._broker.absent_nodes()
        except Exception as exc:
            log.warning("cannot list lost nodes: %s", exc)
            absent = []
        lost = self.fenced_nodes(absent)
        if lost:
            self._requeue_lost(lost)
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(t.tasks.c.task_id, t.tasks.c.attempt, t.tasks.c.num_nodes)
                .where(and_(t.tasks.c.agent_ended.is_(True), t.tasks.c.released.is_(False), t.tasks.c.attempt > 0))
                .limit(500)
            ).all()
        self._release_all([(task_id, attempt, num_nodes) for task_id, attempt, num_nodes in rows])

    def fenced_nodes(self, absent: Sequence[AbsentNode]) -> set[str]:
        """The absent nodes whose tasks may run again elsewhere, i.e. are known dead.

        Rule: a GONE node's tasks at once (its agent stopped them before deregistering, or
        its provider saw the instance gone and reaped its tasks); a LOST node's only once
        ``node_fence_s`` passed since its last heartbeat. By then its agent, which could
        not renew its lease for a whole lease, has killed them itself (agent.core's
        self-fencing), so a task never runs twice at the same time. ``node_fence_s`` must
        exceed the broker's ``--lease-seconds`` by a margin.
        """
        stamp = self._clock.now()
        return {a.node_id for a in absent if a.gone or stamp - a.last_heartbeat >= self.node_fence_s}

    def _requeue_lost(self, lost: set[str]) -> None:
        events: list[tuple[str, TaskRecord, str]] = []
        ended: list[TaskRecord] = []
        to_release: list[tuple[str, int, int]] = []
        pushes: list[tuple[str, WorkItem]] = []
        early: list[str] = []
        with self._lock, self._engine.begin() as conn:
            rows = conn.execute(
                select(t.tasks, t.tasks.c.node_losses.label("losses"))
                .where(and_(t.tasks.c.node_id.in_(sorted(lost)), t.tasks.c.agent_ended.is_(False)))
                .with_for_update()
            ).all()
            gangs = conn.execute(
                select(t.tasks, t.tasks.c.node_losses.label("losses"))
                .where(and_(t.tasks.c.num_nodes > 1, t.tasks.c.agent_ended.is_(False), t.tasks.c.ranks_json != ""))
                .with_for_update()
            ).all()
            stamp = self._clock.now()
            for row in gangs:
                rec = row_to_task(row)
                self._lose_ranks(conn, rec, lost, row.losses, stamp, events, ended, pushes, early, to_release)
            for row in rows:
                if row.num_nodes > 1:
                    continue  # a gang: handled above, rank by rank
                rec = row_to_task(row)
                to_release.append((rec.task_id, rec.attempt, 1))
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
        for node_id, item in pushes:
            self.dispatcher.send(node_id, item)
        self._release_early(early)
        for task_id, attempt, num_nodes in to_release:
            self._release(task_id, attempt, num_nodes)
        self.wake()
        if rows or events:
            log.warning("re-queued work of lost nodes", extra={"nodes": sorted(lost), "tasks": len(rows)})
            self._notify()

    def _lose_ranks(
        self,
        conn: Any,
        rec: TaskRecord,
        lost: set[str],
        losses: int,
        stamp: float,
        events: list[Any],
        ended: list[TaskRecord],
        pushes: list[tuple[str, WorkItem]],
        early: list[str],
        to_release: list[tuple[str, int, int]],
    ) -> None:
        """Ranks of a gang on lost nodes are over; the whole task re-queues (or fails after
        MAX_NODE_LOSSES) once its other ranks stopped."""
        gone = [i for i, r in enumerate(rec.ranks) if r.node_id in lost and not r.ended]
        if not gone:
            return
        for i in gone:
            rec.ranks[i].state, rec.ranks[i].ended = FAILED, True
            early.append(rank_allocation_id(rec.allocation_id, i))
        if rec.state in ACTIVE and rec.pending_retry is None:
            names = ", ".join(f"{rec.ranks[i].node_id} (rank {i})" for i in gone)
            why = f"node {names} was lost (no heartbeat)"
            pushes.extend(self._end_gang(conn, rec, FAILED, None, why, stamp, events, ended, node_losses=losses + 1))
        if self._settle_gang(conn, rec, stamp, events):
            to_release.append((rec.task_id, rec.attempt, rec.spec.num_nodes))

    # ---- stats -------------------------------------------------------------------------
    def count_by_state(self) -> dict[str, int]:
        """Number of tasks per state (for metrics)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.tasks.c.state, func.count()).group_by(t.tasks.c.state)).all()
        return {state: int(n) for state, n in rows}

    def stats(self) -> Stats:
        """Counts by state, latency percentiles and throughput (see stats.compute_stats)."""
        return compute_stats(self._engine)
