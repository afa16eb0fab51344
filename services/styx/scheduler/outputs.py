"""The scheduler's output side: task logs and the event stream (a mixin of Scheduler).

Logs are stored per (task, attempt, rank) in byte-offset chunks; appends are idempotent.
Events get their seq in commit order, so a watcher resuming from a cursor misses nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, and_, func, insert, literal, select

from styx.common.clock import Clock
from styx.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from styx.common.store import bulk_insert, pg_advisory
from styx.scheduler import tables as t
from styx.scheduler.model import (
    TERMINAL,
    Event,
    IsActive,
    TaskRecord,
    TaskSpec,
)

log = logging.getLogger(__name__)


class OutputsMixin:
    """Logs and events of ``Scheduler``; uses its engine, lock, condition and stop flag."""

    _engine: Engine
    _lock: threading.RLock
    _changed: threading.Condition
    _stop: threading.Event
    _clock: Clock

    def get_task(self, task_id: str) -> TaskRecord:  # provided by Scheduler
        raise NotImplementedError

    # ---- logs --------------------------------------------------------------------------
    def append_logs(
        self, task_id: str, attempt: int, offset: int, data: bytes, rank: int = 0, node_id: str = ""
    ) -> int:
        """Store output at offset (each rank of a multi-node task has its own log); bytes
        already stored are ignored. Returns the new length.

        With ``node_id`` (always, for node-scoped tokens) it must be the node that ran this
        rank of this attempt, so a node cannot write into another task's output.
        """
        with self._lock, self._engine.begin() as conn:
            if node_id:
                ran = conn.execute(
                    select(t.placements.c.node_id).where(
                        and_(
                            t.placements.c.task_id == task_id,
                            t.placements.c.attempt == attempt,
                            t.placements.c.rank == rank,
                        )
                    )
                ).scalar()
                if ran != node_id:
                    raise PermissionDenied(
                        f"node_id: node {node_id!r} did not run rank {rank} of attempt {attempt} of task {task_id!r}"
                    )
            last = conn.execute(
                select(t.logs.c.offset, func.length(t.logs.c.data))
                .where(and_(t.logs.c.task_id == task_id, t.logs.c.attempt == attempt, t.logs.c.rank == rank))
                .order_by(t.logs.c.offset.desc())
                .limit(1)
            ).first()
            length = int(last[0] + last[1]) if last else 0
            if offset > length:
                raise FailedPrecondition(f"offset: {offset} leaves a gap; the stored log ends at {length}")
            rest = data[length - offset :]
            if rest:
                conn.execute(
                    insert(t.logs).values(task_id=task_id, attempt=attempt, rank=rank, offset=length, data=rest)
                )
                length += len(rest)
        if rest:
            self._notify()
        return length

    def stream_logs(
        self, task_id: str, attempt: int, offset: int, follow: bool, is_active: IsActive, rank: int = 0
    ) -> Iterator[tuple[int, int, bytes]]:
        """Yield (attempt, offset, data) chunks of one rank's output (rank 0: the only one of
        a one-node task); with follow, until that output is complete."""
        rec = self.get_task(task_id)
        if rank and rank >= rec.spec.num_nodes:
            n = rec.spec.num_nodes
            raise InvalidArgument(f"rank: task {task_id} runs on {n} node(s); ranks are 0-{n - 1}")
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
                                t.logs.c.rank == rank,
                                t.logs.c.offset + func.length(t.logs.c.data) > pos,
                            )
                        )
                        .order_by(t.logs.c.offset)
                    ).all()
                for chunk_offset, data in chunks:
                    start = max(0, pos - chunk_offset)
                    yield current, pos, bytes(data[start:])
                    pos = chunk_offset + len(data)
            if not follow or self._output_complete(task_id, current, rank):
                return
            with self._changed:
                self._changed.wait(0.5)
            if attempt == 0:
                latest = self.get_task(task_id).attempt
                if latest != current:
                    current, pos = latest, 0

    def _output_complete(self, task_id: str, attempt: int, rank: int = 0) -> bool:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    t.tasks.c.state,
                    t.tasks.c.agent_ended,
                    t.tasks.c.attempt,
                    t.tasks.c.finished_at,
                    t.tasks.c.ranks_json,
                ).where(t.tasks.c.task_id == task_id)
            ).first()
        if row is None:
            return False
        if row.ranks_json and row.attempt == attempt:
            probe = TaskRecord(task_id, "", 0, TaskSpec(name="", run=""), row.state)
            probe.load_ranks(row.ranks_json)
            if rank < len(probe.ranks) and probe.ranks[rank].ended:
                return True  # this rank's output is all shipped, whatever the others do
        if row.state not in TERMINAL:
            return False
        if row.attempt != attempt or row.agent_ended:
            return True
        # Cancelled on a node whose agent never confirmed: stop waiting after a grace period.
        return row.finished_at is not None and self._clock.now() - row.finished_at > 10.0

    # ---- events ------------------------------------------------------------------------
    def _record_events(self, conn: Any, events: list[tuple[str, TaskRecord, str]]) -> None:
        self._insert_events(
            conn,
            [(kind, rec.job_id, rec.task_id, rec.state, rec.attempt, rec.node_id, msg) for kind, rec, msg in events],
        )

    @staticmethod
    def _lock_events(conn: Any) -> None:
        # Serialize event writers across replicas until commit, so seq order is commit
        # order and a watcher that read seq N can never later find an uncommitted N-1.
        pg_advisory(conn, "scheduler-events")

    def _insert_task_events(self, conn: Any, kind: str, state: str, message: str, where: Any) -> None:
        """One event per task matching ``where``, written by the database itself
        (INSERT ... SELECT, in submission order): a 100k-task job costs one statement."""
        self._lock_events(conn)
        c = t.tasks.c
        rows = select(
            literal(self._clock.now()), literal(kind), c.job_id, c.task_id, literal(state), c.attempt, c.node_id,
            literal(message),
        ).where(where).order_by(c.seq)  # fmt: skip
        names = ["time", "type", "job_id", "task_id", "state", "attempt", "node_id", "message"]
        conn.execute(insert(t.events).from_select(names, rows))

    def _insert_events(self, conn: Any, rows: list[tuple[str, str, str, str, int, str, str]]) -> None:
        """Append events given as (type, job_id, task_id, state, attempt, node_id, message)."""
        if not rows:
            return
        self._lock_events(conn)
        stamp = self._clock.now()
        bulk_insert(
            conn,
            t.events,
            [
                {
                    "time": stamp,
                    "type": kind,
                    "job_id": job_id,
                    "task_id": task_id,
                    "state": state,
                    "attempt": attempt,
                    "node_id": node_id,
                    "message": message,
                }
                for kind, job_id, task_id, state, attempt, node_id, message in rows
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
