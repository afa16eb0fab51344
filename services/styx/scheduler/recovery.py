"""Level-triggered repairs: re-queue the work of lost nodes, retry failed releases."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, select, update

from styx.common.placement import rank_allocation_id
from styx.scheduler import tables as t
from styx.scheduler.gangs import GangMixin
from styx.scheduler.model import (
    ACTIVE,
    FAILED,
    MAX_NODE_LOSSES,
    AbsentNode,
    TaskRecord,
)
from styx.scheduler.queries import row_to_task
from styx.scheduler.workqueue import WorkItem

log = logging.getLogger(__name__)


class Recovery(GangMixin):
    """The recovery part of ``Scheduler`` (run by the dispatching replica)."""

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
