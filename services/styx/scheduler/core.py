"""Scheduler logic: jobs and tasks, the dispatch loop, agent reports, events, logs, stats.

The store is the truth. A dispatch pass reads the ready set (PENDING, not blocked by
dependencies) ordered by priority then submission order, asks the broker to place the
whole batch at once, and records the placements. A task the broker cannot place now
waits without blocking smaller tasks behind it; a task no provider could ever fit fails
with the broker's reason. Assignments reach agents through per-node queues that the
agent's WorkStream drains; a reconnecting agent is re-sent what it has not finished.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, and_, bindparam, func, insert, select, update

from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound
from styx.common.ids import new_id
from styx.common.resources import Resources
from styx.common.store import create_tables
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
    validate_job,
)

log = logging.getLogger(__name__)

DISPATCH_BATCH = 2000
_EVENT_FOR_STATE = {
    SCHEDULED: "SCHEDULED",
    RUNNING: "STARTED",
    SUCCEEDED: "SUCCEEDED",
    FAILED: "FAILED",
    CANCELLED: "CANCELLED",
    SKIPPED: "SKIPPED",
}


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


@dataclass(frozen=True)
class Assign:
    """Work item: start an attempt."""

    task_id: str
    job_id: str
    attempt: int
    spec: TaskSpec
    gpu_indices: tuple[int, ...]


@dataclass(frozen=True)
class Cancel:
    """Work item: stop an attempt."""

    task_id: str
    attempt: int
    reason: str


WorkItem = Assign | Cancel


@dataclass(frozen=True)
class Stats:
    """Aggregates over all tasks."""

    tasks_by_state: dict[str, int]
    jobs_total: int
    queue_wait_p50_s: float
    queue_wait_p99_s: float
    run_time_p50_s: float
    run_time_p99_s: float


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    idx = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[idx]


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
    )


class Dispatcher:
    """Per-node queues of work items; an agent's WorkStream drains its node's queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, queue.Queue[WorkItem | None]] = {}

    def attach(self, node_id: str) -> queue.Queue[WorkItem | None]:
        """Give a node a fresh queue; an older stream of the same node is told to end."""
        q: queue.Queue[WorkItem | None] = queue.Queue()
        with self._lock:
            old = self._queues.get(node_id)
            self._queues[node_id] = q
        if old is not None:
            old.put(None)
        return q

    def detach(self, node_id: str, q: queue.Queue[WorkItem | None]) -> None:
        """Forget a node's queue if it is still the current one."""
        with self._lock:
            if self._queues.get(node_id) is q:
                del self._queues[node_id]

    def send(self, node_id: str, item: WorkItem) -> bool:
        """Queue an item for a connected node; False when the node is not connected."""
        with self._lock:
            q = self._queues.get(node_id)
        if q is None:
            return False
        q.put(item)
        return True

    def connected(self) -> list[str]:
        """Ids of nodes with an open stream."""
        with self._lock:
            return list(self._queues)


class Scheduler:
    """Owns jobs and tasks. Thread-safe: state transitions happen under one lock."""

    def __init__(self, engine: Engine, broker: BrokerPort | None) -> None:
        self._engine = engine
        self._broker = broker
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.dispatcher = Dispatcher()
        self._log_len: dict[tuple[str, int], int] = {}
        create_tables(engine, t.metadata)
        with engine.connect() as conn:
            self._next_seq = int(conn.execute(select(func.coalesce(func.max(t.tasks.c.seq), 0))).scalar_one()) + 1

    # ---- submission ---------------------------------------------------------------------
    def submit_job(self, request_id: str, name: str, specs: list[TaskSpec]) -> tuple[str, list[TaskRecord]]:
        """Store a job's tasks as PENDING; a repeated request_id returns the first job."""
        if not request_id or len(request_id) > 128:
            raise InvalidArgument("request_id: required, 1-128 characters (a UUID is fine)")
        existing = self._job_by_request(request_id)
        if existing is not None:
            return existing, self.list_tasks(job_id=existing, limit=10**6, oldest_first=True)
        specs = validate_job(specs)
        stamp = now()
        job_id = new_id("j")
        records: list[TaskRecord] = []
        with self._lock:
            for spec in specs:
                records.append(
                    TaskRecord(
                        task_id=new_id("t"),
                        job_id=job_id,
                        seq=self._next_seq,
                        spec=spec,
                        state=PENDING,
                        created_at=stamp,
                    )
                )
                self._next_seq += 1
            try:
                with self._engine.begin() as conn:
                    conn.execute(
                        insert(t.jobs).values(
                            job_id=job_id, request_id=request_id, name=name or specs[0].name, created_at=stamp
                        )
                    )
                    conn.execute(
                        insert(t.tasks),
                        [
                            {
                                "task_id": r.task_id,
                                "job_id": job_id,
                                "seq": r.seq,
                                "name": r.spec.name,
                                "spec_json": r.spec.to_json(),
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
                            }
                            for r in records
                        ],
                    )
                    self._record_events(conn, [("SUBMITTED", r, "") for r in records])
            except Exception:
                # Lost a race with the same request_id: answer with the winner's job.
                winner = self._job_by_request(request_id)
                if winner is None:
                    raise
                return winner, self.list_tasks(job_id=winner, limit=10**6, oldest_first=True)
        self._notify()
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
            row = conn.execute(select(t.tasks).where(t.tasks.c.task_id == task_id)).first()
        if row is None:
            raise NotFound(f"task {task_id!r} not found; `sky status` lists tasks")
        return _row_to_task(row)

    def list_tasks(
        self, job_id: str = "", states: Sequence[str] = (), limit: int = 1000, oldest_first: bool = False
    ) -> list[TaskRecord]:
        """Tasks, newest first unless oldest_first."""
        query = select(t.tasks)
        if job_id:
            query = query.where(t.tasks.c.job_id == job_id)
        if states:
            query = query.where(t.tasks.c.state.in_(list(states)))
        query = query.order_by(t.tasks.c.seq.asc() if oldest_first else t.tasks.c.seq.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [_row_to_task(r) for r in conn.execute(query)]

    # ---- dispatch ------------------------------------------------------------------------
    def wake(self) -> None:
        """Ask the dispatch loop for a pass now (new work, freed capacity, new node)."""
        self._wake.set()

    def run_loop(self, idle_wait_s: float = 0.5) -> None:
        """Dispatch until stop(); passes run on wake-ups and at least every idle_wait_s."""
        while not self._stop.is_set():
            self._wake.wait(idle_wait_s)
            self._wake.clear()
            try:
                while self.dispatch_once() and not self._stop.is_set():
                    pass
                self.retry_releases()
            except Exception:
                log.exception("dispatch pass failed; retrying")
                self._stop.wait(1.0)

    def stop(self) -> None:
        """End run_loop and wake every waiting stream."""
        self._stop.set()
        self._wake.set()
        self._notify()

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    def dispatch_once(self) -> int:
        """One pass over the ready set; returns how many tasks were placed."""
        if self._broker is None:
            return 0
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(t.tasks)
                .where(and_(t.tasks.c.state == PENDING, t.tasks.c.blocked.is_(False)))
                .order_by(t.tasks.c.priority.desc(), t.tasks.c.seq.asc())
                .limit(DISPATCH_BATCH)
            ).all()
        if not rows:
            return 0
        ready = [_row_to_task(r) for r in rows]
        asks = [PlacementAsk(f"{r.task_id}/{r.attempt + 1}", r.task_id, r.spec.resources) for r in ready]
        results = self._broker.allocate(asks)
        placed: list[tuple[TaskRecord, PlacementResult]] = []
        infeasible: list[tuple[TaskRecord, PlacementResult]] = []
        for rec, res in zip(ready, results, strict=True):
            if res.outcome == "placed":
                placed.append((rec, res))
            elif res.outcome == "infeasible":
                infeasible.append((rec, res))
        orphans = self._apply_placements(placed, infeasible)
        for allocation_id in orphans:
            self._broker.release(allocation_id)
        return len(placed) - len(orphans)

    def _apply_placements(
        self,
        placed: list[tuple[TaskRecord, PlacementResult]],
        infeasible: list[tuple[TaskRecord, PlacementResult]],
    ) -> list[str]:
        stamp = now()
        orphans: list[str] = []
        sends: list[tuple[str, Assign]] = []
        ended: list[TaskRecord] = []
        with self._lock, self._engine.begin() as conn:
            ids = [rec.task_id for rec, _ in placed + infeasible]
            still_pending = (
                set(
                    conn.execute(
                        select(t.tasks.c.task_id).where(and_(t.tasks.c.task_id.in_(ids), t.tasks.c.state == PENDING))
                    ).scalars()
                )
                if ids
                else set()
            )
            updates = []
            events = []
            for rec, res in placed:
                if rec.task_id not in still_pending:
                    orphans.append(res.allocation_id)  # cancelled meanwhile
                    continue
                rec.state, rec.attempt, rec.node_id = SCHEDULED, rec.attempt + 1, res.node_id
                rec.gpu_indices, rec.scheduled_at = res.gpu_indices, stamp
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
                    }
                )
                events.append(("SCHEDULED", rec, f"on {res.node_id}"))
                sends.append((res.node_id, Assign(rec.task_id, rec.job_id, rec.attempt, rec.spec, res.gpu_indices)))
            if updates:
                conn.execute(
                    update(t.tasks).where(t.tasks.c.task_id == bindparam("k_task_id")),
                    updates,
                )
            for rec, res in infeasible:
                if rec.task_id not in still_pending:
                    continue
                self._finish(conn, rec, FAILED, None, res.reason, stamp, events)
                ended.append(rec)
            self._record_events(conn, events)
        for node_id, item in sends:
            self.dispatcher.send(node_id, item)
        self._after_end(ended)
        self._notify()
        return orphans

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
    ) -> None:
        values: dict[str, Any] = {
            "state": state,
            "exit_code": exit_code,
            "failure_reason": reason,
            "finished_at": stamp,
        }
        if agent_ended is not None:
            values["agent_ended"] = agent_ended
        conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(**values))
        rec.state, rec.exit_code, rec.failure_reason, rec.finished_at = state, exit_code, reason, stamp
        events.append((_EVENT_FOR_STATE[state], rec, reason))

    def _after_end(self, ended: list[TaskRecord]) -> None:
        """Unblock or skip dependents of tasks that reached a terminal state."""
        jobs = {rec.job_id for rec in ended}
        for job_id in jobs:
            self._resolve_dependents(job_id)

    def _resolve_dependents(self, job_id: str) -> None:
        while True:
            with self._lock, self._engine.begin() as conn:
                rows = conn.execute(
                    select(t.tasks.c.name, t.tasks.c.state, t.tasks.c.failure_reason).where(t.tasks.c.job_id == job_id)
                ).all()
                states = {r.name: (r.state, r.failure_reason) for r in rows}
                blocked = conn.execute(
                    select(t.tasks).where(
                        and_(t.tasks.c.job_id == job_id, t.tasks.c.blocked.is_(True), t.tasks.c.state == PENDING)
                    )
                ).all()
                events: list[tuple[str, TaskRecord, str]] = []
                skipped = 0
                for row in blocked:
                    rec = _row_to_task(row)
                    deps = [(d, states[d]) for d in rec.spec.depends_on]
                    bad = [(d, s) for d, s in deps if s[0] in TERMINAL and s[0] != SUCCEEDED]
                    if bad:
                        dep, (dep_state, dep_reason) = bad[0]
                        why = f"upstream task {dep!r} ended {dep_state}" + (f": {dep_reason}" if dep_reason else "")
                        self._finish(conn, rec, SKIPPED, None, why, now(), events, agent_ended=True)
                        conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(released=True))
                        skipped += 1
                    elif all(s[0] == SUCCEEDED for _, s in deps):
                        conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(blocked=False))
                self._record_events(conn, events)
            if not skipped:
                break
        self.wake()

    # ---- cancel ------------------------------------------------------------------------
    def cancel_task(self, task_id: str) -> TaskRecord:
        """Cancel a task; a finished task is returned unchanged."""
        events: list[tuple[str, TaskRecord, str]] = []
        with self._lock, self._engine.begin() as conn:
            rec = self.get_task(task_id)
            if rec.state in TERMINAL:
                return rec
            reason = "cancelled by user"
            was = rec.state
            # A pending task has no agent work; a placed one ends when its agent confirms.
            self._finish(conn, rec, CANCELLED, None, reason, now(), events, agent_ended=was == PENDING)
            if was == PENDING:
                conn.execute(update(t.tasks).where(t.tasks.c.task_id == task_id).values(released=True))
            self._record_events(conn, events)
        if was in ACTIVE:
            self.dispatcher.send(rec.node_id, Cancel(rec.task_id, rec.attempt, reason))
        self._after_end([rec])
        self._notify()
        return rec

    # ---- agents ------------------------------------------------------------------------
    def outstanding_work(self, node_id: str) -> list[WorkItem]:
        """What a (re)connecting agent must receive: live assignments and unconfirmed cancels."""
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
        items: list[WorkItem] = []
        for row in rows:
            rec = _row_to_task(row)
            if rec.state == CANCELLED:
                items.append(Cancel(rec.task_id, rec.attempt, rec.failure_reason))
            else:
                items.append(Assign(rec.task_id, rec.job_id, rec.attempt, rec.spec, rec.gpu_indices))
        return items

    def work_stream(self, node_id: str, is_active: Any) -> Iterator[WorkItem]:
        """Yield a node's work: first what is outstanding, then new items as they come."""
        if not node_id:
            raise InvalidArgument("node_id: required")
        q = self.dispatcher.attach(node_id)
        self.wake()  # a new node may unblock waiting tasks
        try:
            yield from self.outstanding_work(node_id)
            while is_active() and not self._stop.is_set():
                try:
                    item = q.get(timeout=1.0)
                except queue.Empty:
                    continue
                if item is None:
                    return
                yield item
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
                self._finish(conn, rec, state, exit_code, message if state != SUCCEEDED else "", stamp, events, True)
                release, ended = True, [rec]
            elif rec.state in TERMINAL and not self._agent_ended(conn, task_id):
                # E.g. cancelled by a user: the agent now confirms its process is gone.
                conn.execute(update(t.tasks).where(t.tasks.c.task_id == task_id).values(agent_ended=True))
                release = True
            self._record_events(conn, events)
        if release:
            self._release(rec)
        self._after_end(ended)
        self._notify()
        return rec

    def _agent_ended(self, conn: Any, task_id: str) -> bool:
        return bool(conn.execute(select(t.tasks.c.agent_ended).where(t.tasks.c.task_id == task_id)).scalar())

    def _release(self, rec: TaskRecord) -> None:
        if self._broker is None:
            return
        try:
            self._broker.release(rec.allocation_id)
        except Exception as exc:
            log.warning("release of %s failed, will retry: %s", rec.allocation_id, exc)
            return
        with self._engine.begin() as conn:
            conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(released=True))
        self.wake()

    def retry_releases(self) -> None:
        """Release allocations whose release failed earlier (broker was down)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(t.tasks)
                .where(and_(t.tasks.c.agent_ended.is_(True), t.tasks.c.released.is_(False), t.tasks.c.attempt > 0))
                .limit(500)
            ).all()
        for row in rows:
            self._release(_row_to_task(row))

    # ---- logs --------------------------------------------------------------------------
    def append_logs(self, task_id: str, attempt: int, offset: int, data: bytes) -> int:
        """Store output at offset; bytes already stored are ignored. Returns the new length."""
        key = (task_id, attempt)
        with self._lock:
            length = self._log_length(key)
            if offset > length:
                raise FailedPrecondition(f"offset: {offset} leaves a gap; the stored log ends at {length}")
            skip = length - offset
            if skip < len(data):
                rest = data[skip:]
                with self._engine.begin() as conn:
                    conn.execute(insert(t.logs).values(task_id=task_id, attempt=attempt, offset=length, data=rest))
                length += len(rest)
                self._log_len[key] = length
        self._notify()
        return length

    def _log_length(self, key: tuple[str, int]) -> int:
        if key not in self._log_len:
            with self._engine.connect() as conn:
                self._log_len[key] = int(
                    conn.execute(
                        select(func.coalesce(func.sum(func.length(t.logs.c.data)), 0)).where(
                            and_(t.logs.c.task_id == key[0], t.logs.c.attempt == key[1])
                        )
                    ).scalar_one()
                )
        return self._log_len[key]

    def stream_logs(
        self, task_id: str, attempt: int, offset: int, follow: bool, is_active: Any
    ) -> Iterator[tuple[int, int, bytes]]:
        """Yield (attempt, offset, data) chunks; with follow, until the attempt is over."""
        rec = self.get_task(task_id)
        pos = offset
        while not self._stop.is_set() and is_active():
            current = attempt or rec.attempt
            if current:
                with self._engine.connect() as conn:
                    chunks = conn.execute(
                        select(t.logs.c.offset, t.logs.c.data)
                        .where(and_(t.logs.c.task_id == task_id, t.logs.c.attempt == current))
                        .order_by(t.logs.c.offset)
                    ).all()
                for chunk_offset, data in chunks:
                    end = chunk_offset + len(data)
                    if end <= pos:
                        continue
                    start = max(0, pos - chunk_offset)
                    yield current, pos, bytes(data[start:])
                    pos = end
            if not follow or self._output_complete(task_id, current):
                return
            with self._changed:
                self._changed.wait(0.5)
            rec = self.get_task(task_id)
            if attempt == 0 and rec.attempt != current:
                pos = 0

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

    def events_after(self, after_seq: int, job_id: str = "", task_id: str = "", limit: int = 500) -> list[Event]:
        """Recorded events with seq > after_seq, oldest first."""
        query = select(t.events).where(t.events.c.seq > after_seq)
        if job_id:
            query = query.where(t.events.c.job_id == job_id)
        if task_id:
            query = query.where(t.events.c.task_id == task_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(t.events.c.seq).limit(limit)).all()
        return [
            Event(r.seq, r.time, r.type, r.job_id, r.task_id, r.state, r.attempt, r.node_id, r.message) for r in rows
        ]

    def watch_events(self, after_seq: int, job_id: str, task_id: str, follow: bool, is_active: Any) -> Iterator[Event]:
        """Yield events after the cursor; with follow, keep yielding new ones."""
        cursor = after_seq
        while not self._stop.is_set() and is_active():
            batch = self.events_after(cursor, job_id, task_id)
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
    def stats(self) -> Stats:
        """Counts by state and latency percentiles over the most recent 10k started tasks."""
        with self._engine.connect() as conn:
            counts = {
                r[0]: int(r[1]) for r in conn.execute(select(t.tasks.c.state, func.count()).group_by(t.tasks.c.state))
            }
            jobs = int(conn.execute(select(func.count()).select_from(t.jobs)).scalar_one())
            rows = conn.execute(
                select(t.tasks.c.created_at, t.tasks.c.started_at, t.tasks.c.finished_at)
                .where(t.tasks.c.started_at.is_not(None))
                .order_by(t.tasks.c.seq.desc())
                .limit(10_000)
            ).all()
        waits = [r.started_at - r.created_at for r in rows]
        runs = [r.finished_at - r.started_at for r in rows if r.finished_at is not None]
        return Stats(
            tasks_by_state=counts,
            jobs_total=jobs,
            queue_wait_p50_s=_percentile(waits, 0.5),
            queue_wait_p99_s=_percentile(waits, 0.99),
            run_time_p50_s=_percentile(runs, 0.5),
            run_time_p99_s=_percentile(runs, 0.99),
        )
