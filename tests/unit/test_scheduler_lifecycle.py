"""Scheduler: cancelling a job of any size, the per-job task limit, and when a lost node's
tasks may run again (issue 9, "no double runs")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, event

from helpers import InProcessBroker
from styx.broker.core import Broker
from styx.common.clock import FakeClock
from styx.common.errors import InvalidArgument
from styx.common.resources import Capacity, Resources
from styx.scheduler.core import Scheduler
from styx.scheduler.model import MAX_TASKS_PER_JOB, AbsentNode, TaskSpec
from styx.scheduler.workqueue import Cancel


@pytest.fixture
def plane(engine_factory):
    broker = Broker(engine_factory("broker"), None)
    sched = Scheduler(engine_factory("scheduler"), InProcessBroker(broker))
    broker.register_node("n1", "local", "pid-1", Capacity(4, 8, []))
    return sched, broker


@contextmanager
def counting(engine: Engine) -> Iterator[dict[str, int]]:
    """Count the commits and the statements run on ``engine`` inside the block."""
    seen = {"commits": 0, "statements": 0}

    def on_commit(conn: object) -> None:
        seen["commits"] += 1

    def on_statement(*args: object) -> None:
        seen["statements"] += 1

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "before_cursor_execute", on_statement)


def _job(sched: Scheduler, size: int, request_id: str) -> str:
    """A job of ``size`` tasks, a chain every 10 (so some are blocked), 4 of them placed."""
    specs = [
        TaskSpec(name=f"t{i}", run="x", resources=Resources(cpus=1), depends_on=(f"t{i - 1}",) if i % 10 else ())
        for i in range(size)
    ]
    job_id, _ = sched.submit_job(request_id, "big", specs)
    sched.dispatch_once()
    return job_id


def test_cancel_job_is_one_transaction_whatever_its_size(plane):
    sched, _ = plane
    counts = {}
    for size in (40, 400):
        job_id = _job(sched, size, f"r{size}")
        placed = [t.task_id for t in sched.list_tasks(job_id=job_id, states=["SCHEDULED"])]
        assert placed
        sched.outstanding_work("n1")
        with counting(sched._engine) as seen:
            job = sched.cancel_job(job_id)
        assert seen["commits"] == 1, "one transaction"
        counts[size] = seen["statements"]
        assert job.state == "CANCELLED" and job.task_counts == {"CANCELLED": size}
        cancels = [w for w in sched.outstanding_work("n1") if isinstance(w, Cancel)]
        assert sorted(c.task_id for c in cancels) == sorted(placed)
        events = [e for e in sched.events_after(0, job_id=job_id, limit=10_000) if e.type == "CANCELLED"]
        assert len(events) == size
        for task_id in placed:  # placed tasks end for good once their agent confirms
            sched.report("n1", task_id, 1, "CANCELLED", None, "cancelled by user")
    assert counts[400] == counts[40], f"statements must not grow with the job: {counts}"


def test_cancel_job_of_a_finished_job_changes_nothing(plane):
    sched, _ = plane
    job_id = _job(sched, 3, "r")
    sched.cancel_job(job_id)
    with counting(sched._engine) as seen:
        assert sched.cancel_job(job_id).state == "CANCELLED"
    assert seen["commits"] <= 1


def test_submit_over_the_per_job_task_limit_names_the_field(plane):
    sched, _ = plane
    specs = [TaskSpec(name=f"t{i}", run="x") for i in range(MAX_TASKS_PER_JOB + 1)]
    with pytest.raises(InvalidArgument, match=r"job\.tasks: at most 100000 tasks per job, got 100001"):
        sched.submit_job("too-big", "", specs)
    assert sched.list_jobs() == []


class AbsentPort(InProcessBroker):
    """The in-process broker, but the test says which nodes are absent and since when."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.absent: list[AbsentNode] = []

    def absent_nodes(self) -> list[AbsentNode]:
        return list(self.absent)


@pytest.fixture
def fenced(engine_factory):
    clock = FakeClock()
    broker = Broker(engine_factory("broker"), None)
    port = AbsentPort(broker)
    sched = Scheduler(engine_factory("scheduler"), port, clock=clock, node_fence_s=20.0)
    broker.register_node("n1", "local", "pid-1", Capacity(4, 8, []))
    _, (task,) = sched.submit_job("r", "", [TaskSpec(name="a", run="x", resources=Resources(cpus=1))])
    assert sched.dispatch_once() == 1
    sched.report("n1", task.task_id, 1, "RUNNING", None, "")
    return sched, port, clock, task.task_id


def test_a_lost_nodes_task_waits_for_the_fence(fenced):
    """LOST (no heartbeat): the old attempt may still run until its agent fences itself, so
    the task re-queues only node_fence_s after the last heartbeat, not when LOST is seen."""
    sched, port, clock, task_id = fenced
    port.absent = [AbsentNode("n1", gone=False, last_heartbeat=clock.now())]
    clock.advance(15.5)  # the broker's lease ran out: LOST
    sched.reconcile()
    assert sched.get_task(task_id).state == "RUNNING"
    clock.advance(4.0)
    sched.reconcile()
    assert sched.get_task(task_id).state == "RUNNING"
    clock.advance(0.5)
    sched.reconcile()
    rec = sched.get_task(task_id)
    assert rec.state == "PENDING" and "node n1 was lost" in rec.failure_reason


def test_a_gone_nodes_task_requeues_at_once(fenced):
    """GONE (deregistered by its agent or provider): its tasks are known stopped."""
    sched, port, clock, task_id = fenced
    port.absent = [AbsentNode("n1", gone=True, last_heartbeat=clock.now())]
    clock.advance(0.1)
    sched.reconcile()
    assert sched.get_task(task_id).state == "PENDING"


def test_cancel_job_stops_every_rank_of_a_placed_gang(engine_factory):
    broker = Broker(engine_factory("broker"), None, lease_seconds=60)
    for node_id in ("n1", "n2"):
        broker.register_node(node_id, "local", "", Capacity(8, 16, []))
    sched = Scheduler(engine_factory("scheduler"), InProcessBroker(broker))
    specs = [TaskSpec(name="g", run="true", num_nodes=2), TaskSpec(name="after", run="true", depends_on=("g",))]
    job_id, (gang, _) = sched.submit_job("r", "", specs)
    assert sched.dispatch_once() == 1
    ranks = {r.node_id: i for i, r in enumerate(sched.get_task(gang.task_id).ranks)}
    assert sched.cancel_job(job_id).task_counts == {"CANCELLED": 2}
    for node_id, rank in ranks.items():
        (item,) = sched.outstanding_work(node_id)
        assert isinstance(item, Cancel) and (item.task_id, item.rank) == (gang.task_id, rank)
        sched.report(node_id, gang.task_id, 1, "CANCELLED", None, "", rank=rank)
    assert broker.allocation_count() == 0
