"""Dispatch passes: the ready set in priority order, placed by the broker in one call.

A pass reads the ready set (PENDING, dependencies met, backoff over) ordered by priority
then submission order, asks the broker to place the whole batch at once, and records the
placements. A task the broker cannot place now waits without blocking smaller tasks
behind it, until it has waited ``starvation_s`` (see ``_starvation_cut``); a task no
provider could ever fit fails with the broker's reason."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from styx.common.placement import Ask, Placement, holds_for_same_shape, rank_allocation_id
from styx.common.store import bulk_insert
from styx.scheduler import statements as sql
from styx.scheduler import tables as t
from styx.scheduler.gangs import GangMixin
from styx.scheduler.model import (
    FAILED,
    PENDING,
    SCHEDULED,
    RankRecord,
    TaskRecord,
    resources_from_json,
)
from styx.scheduler.queries import row_to_task
from styx.scheduler.transitions import EVENT_FOR_STATE
from styx.scheduler.workqueue import Assign

DISPATCH_BATCH = 2000
# However a pass is woken, the whole ready set goes to the broker at least this often, so a
# capacity change this process cannot see (another replica's release, a node the broker
# booted, a cluster torn down) is found within this time.
FULL_PASS_S = 0.5
# Asks in a pass's first broker call, doubling per call up to the last (see _ask_broker).
FIRST_CHUNK, MAX_CHUNK = 32, 512



class Dispatching(GangMixin):
    """The dispatch part of ``Scheduler``."""

    _waiting: set[str]
    _waiting_epoch: int
    _full_pass_at: float

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
        todo = [
            ((r[4], r[5]), Ask(alloc, r[0], resources_from_json(r[4]), r[5]))
            for r in rows
            if (alloc := f"{r[0]}/{r[1] + 1}") not in self._waiting
        ]
        if not todo:
            return 0
        results = self._ask_broker(todo)
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

    def _ask_broker(self, todo: list[tuple[tuple[str, int], Ask]]) -> list[Placement]:
        """The broker's answers to ``todo`` ((shape, ask) in order), in calls of FIRST_CHUNK
        asks doubling up to MAX_CHUNK.

        Asks of a shape (resources, num_nodes) that the broker already answered with a
        wait that holds for the shape (``holds_for_same_shape``: no room, no node booting
        for it) are left out and recorded as waiting: the broker would answer them the same
        from its own cache. A queue of thousands of like tasks behind a full node then
        costs one call of a few asks, not 2,000 asks converted each way on every release.
        """
        assert self._broker is not None
        results: list[Placement] = []
        blocked: set[tuple[str, int]] = set()
        i, size = 0, FIRST_CHUNK
        while i < len(todo):
            chunk: list[tuple[tuple[str, int], Ask]] = []
            while i < len(todo) and len(chunk) < size:
                shape, ask = todo[i]
                i += 1
                if shape in blocked:
                    self._waiting.add(ask.allocation_id)
                else:
                    chunk.append((shape, ask))
            if not chunk:
                break
            answers = self._broker.allocate([ask for _, ask in chunk])
            for (shape, _), answer in zip(chunk, answers, strict=True):
                if holds_for_same_shape(answer):
                    blocked.add(shape)
            results.extend(answers)
            size = min(2 * size, MAX_CHUNK)
        return results

    def _starvation_cut(self, ready: Sequence[Any], stamp: float) -> Sequence[Any]:
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
                    events.append((EVENT_FOR_STATE[FAILED], rec, why))
                    ended.append(rec)
            self._resolve_dependents(conn, ended, events)
            self._record_events(conn, events)
        for node_id, item in sends:
            self.dispatcher.send(node_id, item)
        self._notify()
        return orphans
