"""Scheduler: owns jobs and tasks; this module builds the parts and runs the dispatch loop.

The store is the truth; nothing lives only in this process's memory, so the scheduler can
be killed at any point and several replicas can share one PostgreSQL.

The parts, each a layer of ``Scheduler`` with one job (arrows point down only):
``submission`` (SubmitJob), ``dispatch`` (placing the ready set), ``agents`` (work streams
and status reports), ``cancel``, ``recovery`` (lost nodes, failed releases); under them
``gangs`` (multi-node bookkeeping) and ``transitions`` (shared state and task
transitions), and the read side ``queries`` and ``outputs`` (logs, events)."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.common.group_commit import GroupCommit
from styx.common.ids import new_id
from styx.common.leases import Lease
from styx.common.migrations import upgrade
from styx.common.secretbox import SecretBox
from styx.scheduler import tables as t
from styx.scheduler.agents import AgentWork
from styx.scheduler.cancel import Cancelling
from styx.scheduler.dispatch import Dispatching
from styx.scheduler.model import DEFAULT_NODE_FENCE_S, TaskRecord
from styx.scheduler.ports import BrokerPort
from styx.scheduler.recovery import Recovery
from styx.scheduler.releases import ReleaseBatcher
from styx.scheduler.stats import Stats, compute_stats
from styx.scheduler.submission import MAX_GROUP_TASKS, Submission, _Submission
from styx.scheduler.workqueue import Dispatcher

__all__ = ["BrokerPort", "Scheduler"]

log = logging.getLogger(__name__)


class Scheduler(Submission, Dispatching, AgentWork, Cancelling, Recovery):
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
        secrets: SecretBox | None = None,
    ) -> None:
        self._clock = clock
        # Seals tasks' secrets for the store (see Transitions.secret_box).
        self._secret_box = secrets
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

    def count_by_state(self) -> dict[str, int]:
        """Number of tasks per state (for metrics)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.tasks.c.state, func.count()).group_by(t.tasks.c.state)).all()
        return {state: int(n) for state, n in rows}

    def stats(self) -> Stats:
        """Counts by state, latency percentiles and throughput (see stats.compute_stats)."""
        return compute_stats(self._engine)
