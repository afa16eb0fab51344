"""Multi-node (gang) tasks: per-rank reports, failures and releases (a layer of Scheduler, over its transitions)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update

from styx.common.errors import FailedPrecondition
from styx.common.placement import rank_allocation_id
from styx.scheduler import tables as t
from styx.scheduler.model import (
    ACTIVE,
    FAILED,
    MAX_NODE_LOSSES,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    TaskRecord,
)
from styx.scheduler.transitions import Transitions
from styx.scheduler.workqueue import Cancel, WorkItem

log = logging.getLogger(__name__)


class GangMixin(Transitions):
    """The rank bookkeeping of ``Scheduler`` (multi-node tasks), over its shared transitions."""

    # ---- multi-node tasks ----------------------------------------------------------------
    def _report_rank(
        self,
        conn: Any,
        rec: TaskRecord,
        node_id: str,
        rank: int,
        state: str,
        exit_code: int | None,
        message: str,
        stamp: float,
        events: list[tuple[str, TaskRecord, str]],
        ended: list[TaskRecord],
    ) -> tuple[list[str], list[tuple[str, WorkItem]], bool]:
        """Apply one rank's report to a gang task.

        RUNNING once any rank started; SUCCEEDED when every rank succeeded; as soon as one
        rank fails the task FAILS (or, when its retry policy allows, is re-queued once every
        other rank stopped) and the other ranks get a Cancellation. Returns (allocations of
        ranks that just ended, to free at once; work items to push; whether every rank is
        over now, so the whole attempt's allocations are released).
        """
        # Ranks run on distinct nodes: the reporting node names the rank, whatever an older
        # agent put in the rank field.
        mine = [i for i, r in enumerate(rec.ranks) if r.node_id == node_id]
        if rank < len(rec.ranks) and rec.ranks[rank].node_id == node_id:
            mine = [rank]
        if not mine:
            raise FailedPrecondition(f"rank: node {node_id} runs no rank of task {rec.task_id} attempt {rec.attempt}")
        r = mine[0]
        slot = rec.ranks[r]
        releases: list[str] = []
        pushes: list[tuple[str, WorkItem]] = []
        if state == RUNNING:
            if slot.ended:
                return releases, pushes, False
            slot.state = RUNNING if slot.state == SCHEDULED else slot.state
            if rec.state == SCHEDULED:
                conn.execute(
                    update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(state=RUNNING, started_at=stamp)
                )
                rec.state, rec.started_at = RUNNING, stamp
                events.append(("STARTED", rec, f"on {node_id} (rank {r})"))
            self._save_ranks(conn, rec)
            return releases, pushes, False
        if slot.ended:
            return releases, pushes, False  # a repeated report
        slot.state, slot.exit_code, slot.ended = state, exit_code, True
        releases.append(rank_allocation_id(rec.allocation_id, r))
        if rec.state in ACTIVE and rec.pending_retry is None:
            if state == SUCCEEDED:
                if all(x.state == SUCCEEDED for x in rec.ranks):
                    self._finish(conn, rec, SUCCEEDED, 0, "", stamp, events)
                    ended.append(rec)
            else:
                detail = message or (f"exit {exit_code}" if exit_code is not None else state.lower())
                why = f"rank {r} on {node_id}: {detail}"
                pushes = self._end_gang(conn, rec, state, exit_code, why, stamp, events, ended, failed=state == FAILED)
        return releases, pushes, self._settle_gang(conn, rec, stamp, events)

    def _end_gang(
        self,
        conn: Any,
        rec: TaskRecord,
        state: str,
        exit_code: int | None,
        why: str,
        stamp: float,
        events: list[tuple[str, TaskRecord, str]],
        ended: list[TaskRecord],
        failed: bool = False,
        node_losses: int = 0,
    ) -> list[tuple[str, WorkItem]]:
        """A rank of an active gang ended badly: fail the task at once, or plan its retry for
        when every rank stopped; either way the other ranks are told to stop."""
        if node_losses:
            if node_losses > MAX_NODE_LOSSES:
                why += f"; gave up after {MAX_NODE_LOSSES} lost nodes"
                self._finish(conn, rec, FAILED, None, why, stamp, events)
                ended.append(rec)
            else:
                rec.pending_retry = {"why": why, "delay": None, "node_losses": node_losses}
        else:
            failures = rec.failures + failed
            if failed and rec.spec.retry.allows(failures, exit_code):
                delay = rec.spec.retry.delay(failures)
                rec.pending_retry = {
                    "why": f"attempt {rec.attempt} failed ({why}); retry in {delay:g} s",
                    "delay": delay,
                    "failures": failures,
                }
            else:
                self._finish(conn, rec, state, exit_code, why, stamp, events)
                conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(failures=failures))
                ended.append(rec)
        return self._cancel_ranks(conn, rec, f"stopped: {why}")

    def _cancel_ranks(self, conn: Any, rec: TaskRecord, reason: str) -> list[tuple[str, WorkItem]]:
        """Owe a Cancellation to every rank still running; returns them to push."""
        pushes: list[tuple[str, WorkItem]] = []
        for i, slot in enumerate(rec.ranks):
            if not slot.ended and not slot.cancel:
                slot.cancel = reason
                pushes.append((slot.node_id, Cancel(rec.task_id, rec.attempt, reason, i)))
        self._save_ranks(conn, rec)
        return pushes

    def _settle_gang(self, conn: Any, rec: TaskRecord, stamp: float, events: list[Any]) -> bool:
        """Once every rank is over: apply a planned retry, or mark the attempt's agents done.
        Saves the ranks; returns whether every rank is over."""
        if not all(x.ended for x in rec.ranks):
            self._save_ranks(conn, rec)
            return False
        plan = rec.pending_retry
        if plan is not None and rec.state in ACTIVE:
            delay = plan["delay"]
            counters = {k: plan[k] for k in ("failures", "node_losses") if k in plan}
            self._requeue(conn, rec, None if delay is None else stamp + delay, plan["why"], events, **counters)
            return True
        rec.pending_retry = None
        self._save_ranks(conn, rec)
        conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(agent_ended=True))
        return True

    @staticmethod
    def _save_ranks(conn: Any, rec: TaskRecord) -> None:
        conn.execute(update(t.tasks).where(t.tasks.c.task_id == rec.task_id).values(ranks_json=rec.ranks_json()))

    def _release_early(self, allocation_ids: list[str]) -> None:
        """Free the allocations of ranks that ended while others run (best effort: the whole
        attempt is released again, with retries, once every rank is over)."""
        if self._broker is None:
            return
        for allocation_id in allocation_ids:
            try:
                self._broker.release(allocation_id)
            except Exception as exc:
                log.info("early release of %s failed; released with its task later: %s", allocation_id, exc)
        if allocation_ids:
            self.capacity_freed()
