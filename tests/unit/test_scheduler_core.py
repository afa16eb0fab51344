"""Scheduler core against the real broker core, in process (no sockets), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from helpers import InProcessBroker, wait_until
from styx.broker.core import Broker
from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound
from styx.common.offers import Offer
from styx.common.resources import Accelerator, Capacity, GpuDevice, Resources
from styx.scheduler.core import Scheduler
from styx.scheduler.model import TaskSpec
from styx.scheduler.workqueue import Assign, Cancel


class StaticOffers:
    """A provisioner that offers one small host and never creates anything."""

    def __init__(self) -> None:
        self.provisioned: list[str] = []

    def list_offers(self) -> list[Offer]:
        return [Offer("local", "local", "", "host", 4, 8, "", 0, max_instances=1)]

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        self.provisioned.append(node_id)
        return f"op-{node_id}"

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        return "running", ""


@pytest.fixture
def plane(engine_factory):
    offers = StaticOffers()
    broker = Broker(engine_factory("broker"), offers)
    sched = Scheduler(engine_factory("scheduler"), InProcessBroker(broker))
    broker.register_node(
        "n1", "local", "pid-1", Capacity(4, 8, [GpuDevice(0, "NVIDIA A100"), GpuDevice(1, "NVIDIA A100")])
    )
    return sched, broker, offers


def drain(sched: Scheduler, node_id: str) -> list:
    return sched.outstanding_work(node_id)


def test_submit_dispatch_and_finish(plane):
    sched, broker, _ = plane
    job_id, tasks = sched.submit_job("r1", "", [TaskSpec(name="hello", run="echo hello")])
    assert [t.state for t in tasks] == ["PENDING"]
    assert sched.dispatch_once() == 1
    task = sched.get_task(tasks[0].task_id)
    assert (task.state, task.node_id, task.attempt) == ("SCHEDULED", "n1", 1)
    work = drain(sched, "n1")
    assert isinstance(work[0], Assign) and work[0].spec.run == "echo hello"
    sched.report("n1", task.task_id, 1, "RUNNING", None, "")
    sched.append_logs(task.task_id, 1, 0, b"hello\n")
    done = sched.report("n1", task.task_id, 1, "SUCCEEDED", 0, "")
    assert done.state == "SUCCEEDED" and done.exit_code == 0
    assert broker.get_node("n1").used_cpus == 0
    chunks = list(sched.stream_logs(task.task_id, 0, 0, follow=True, is_active=lambda: True))
    assert b"".join(c[2] for c in chunks) == b"hello\n"
    kinds = [e.type for e in sched.events_after(0, job_id=job_id)]
    assert kinds == ["SUBMITTED", "SCHEDULED", "STARTED", "SUCCEEDED"]


def test_submit_is_idempotent_on_request_id(plane):
    sched, _, _ = plane
    first = sched.submit_job("same", "", [TaskSpec(name="a", run="true")])
    second = sched.submit_job("same", "", [TaskSpec(name="a", run="true")])
    assert first[0] == second[0]
    assert [t.task_id for t in first[1]] == [t.task_id for t in second[1]]
    assert len(sched.list_tasks()) == 1


def test_priority_then_fifo_and_no_head_of_line_blocking(plane):
    sched, _, _ = plane
    big = TaskSpec(name="big", run="true", priority=10, resources=Resources(cpus=4))
    _, (low1,) = sched.submit_job("a", "", [TaskSpec(name="low1", run="true", resources=Resources(cpus=1))])
    _, (high,) = sched.submit_job("b", "", [TaskSpec(name="high", run="true", priority=5, resources=Resources(cpus=2))])
    _, (low2,) = sched.submit_job("c", "", [TaskSpec(name="low2", run="true", resources=Resources(cpus=1))])
    assert sched.dispatch_once() == 3  # 2 + 1 + 1 CPUs fill the 4-CPU node
    order = [w.task_id for w in drain(sched, "n1")]
    assert set(order) == {low1.task_id, high.task_id, low2.task_id}
    # A 4-CPU task that cannot fit now does not stop a smaller one behind it.
    _, (blocked,) = sched.submit_job("d", "", [big])
    sched.report("n1", low1.task_id, 1, "SUCCEEDED", 0, "")
    _, (small,) = sched.submit_job("e", "", [TaskSpec(name="small", run="true", resources=Resources(cpus=1))])
    assert sched.dispatch_once() == 1
    assert sched.get_task(small.task_id).state == "SCHEDULED"
    assert sched.get_task(blocked.task_id).state == "PENDING"


def test_priority_order_of_placement(plane):
    sched, _, _ = plane
    specs = [
        TaskSpec(name=f"t{i}", run="true", priority=p, resources=Resources(cpus=4)) for i, p in enumerate([0, 9, 5])
    ]
    _, _tasks = sched.submit_job("j", "", specs)
    placed = []
    for _ in range(3):
        assert sched.dispatch_once() == 1
        (running,) = [t for t in sched.list_tasks() if t.state == "SCHEDULED"]
        placed.append(running.spec.name)
        sched.report("n1", running.task_id, 1, "SUCCEEDED", 0, "")
    assert placed == ["t1", "t2", "t0"]


def test_gpus_are_assigned_by_index(plane):
    sched, broker, _ = plane
    spec = TaskSpec(name="g", run="nvidia-smi", resources=Resources(cpus=1, accelerators=(Accelerator("A100", 1),)))
    _, (a,) = sched.submit_job("g1", "", [spec])
    _, (b,) = sched.submit_job("g2", "", [spec])
    sched.dispatch_once()
    assert sched.get_task(a.task_id).gpu_indices == (0,)
    assert sched.get_task(b.task_id).gpu_indices == (1,)
    assert broker.get_node("n1").used_gpus == {0, 1}


def test_infeasible_request_fails_at_once_with_reason(plane):
    sched, _, offers = plane
    _, (task,) = sched.submit_job("x", "", [TaskSpec(name="huge", run="true", resources=Resources(cpus=512))])
    sched.dispatch_once()
    failed = sched.get_task(task.task_id)
    assert failed.state == "FAILED"
    assert "cpus=512" in failed.failure_reason and "local/local host has 4 CPUs" in failed.failure_reason
    assert offers.provisioned == []


def test_cancel_pending_and_running(plane):
    sched, broker, _ = plane
    _, (running, pending) = sched.submit_job(
        "c",
        "",
        [
            TaskSpec(name="a", run="sleep 60", resources=Resources(cpus=4)),
            TaskSpec(name="b", run="true", resources=Resources(cpus=4)),
        ],
    )
    sched.dispatch_once()
    assert sched.cancel_task(pending.task_id).state == "CANCELLED"
    assert sched.cancel_task(running.task_id).state == "CANCELLED"
    # The node keeps the CPUs until its agent confirms the process group is gone.
    assert broker.get_node("n1").used_cpus == 4
    assert any(isinstance(w, Cancel) and w.task_id == running.task_id for w in drain(sched, "n1"))
    sched.report("n1", running.task_id, 1, "CANCELLED", None, "killed")
    assert broker.get_node("n1").used_cpus == 0
    assert sched.get_task(running.task_id).state == "CANCELLED"
    assert drain(sched, "n1") == []
    assert sched.cancel_task(running.task_id).state == "CANCELLED"  # idempotent


def test_dependencies_run_in_order_and_failures_skip_dependents(plane):
    sched, _, _ = plane
    specs = [
        TaskSpec(name="prep", run="true"),
        TaskSpec(name="train", run="false", depends_on=("prep",)),
        TaskSpec(name="eval", run="true", depends_on=("train",)),
    ]
    _, (prep, train, ev) = sched.submit_job("dag", "", specs)
    assert sched.dispatch_once() == 1
    sched.report("n1", prep.task_id, 1, "SUCCEEDED", 0, "")
    assert sched.dispatch_once() == 1
    sched.report("n1", train.task_id, 1, "FAILED", 1, "run exited with 1")
    skipped = sched.get_task(ev.task_id)
    assert skipped.state == "SKIPPED" and "'train' ended FAILED" in skipped.failure_reason


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([], "job.tasks: at least one task"),
        ([TaskSpec(name="a", run="  ")], "job.tasks[0].run: must not be empty"),
        ([TaskSpec(name="a", run="x"), TaskSpec(name="a", run="y")], "job.tasks[1].name: 'a' is used twice"),
        ([TaskSpec(name="bad name", run="x")], "job.tasks[0].name"),
        ([TaskSpec(name="a", run="x", envs={"1X": "y"})], "job.tasks[0].envs: '1X'"),
        ([TaskSpec(name="a", run="x", depends_on=("zz",))], "no task named 'zz'"),
        (
            [TaskSpec(name="a", run="x", depends_on=("b",)), TaskSpec(name="b", run="x", depends_on=("a",))],
            "dependency cycle a -> b -> a",
        ),
        ([TaskSpec(name="a", run="x", resources=Resources(cpus=-1))], "job.tasks[0].resources.cpus"),
        ([TaskSpec(name="a", run="x", resources=Resources(infra="a//b"))], "job.tasks[0].resources.infra"),
        ([TaskSpec(name="a", run="x", resources=Resources(arch="sparc"))], "job.tasks[0].resources.arch: 'sparc'"),
    ],
)
def test_bad_jobs_are_refused_naming_the_field(plane, specs, message):
    sched, _, _ = plane
    with pytest.raises(InvalidArgument) as err:
        sched.submit_job("bad", "", specs)
    assert message in err.value.message
    assert sched.list_tasks() == []


def test_unknown_task_and_stale_attempt(plane):
    sched, _, _ = plane
    with pytest.raises(NotFound):
        sched.get_task("t-nope")
    _, (task,) = sched.submit_job("r", "", [TaskSpec(name="a", run="true")])
    sched.dispatch_once()
    with pytest.raises(FailedPrecondition):
        sched.report("n1", task.task_id, 7, "RUNNING", None, "")


def test_log_appends_are_idempotent(plane):
    sched, _, _ = plane
    _, (task,) = sched.submit_job("r", "", [TaskSpec(name="a", run="true")])
    assert sched.append_logs(task.task_id, 1, 0, b"abc") == 3
    assert sched.append_logs(task.task_id, 1, 0, b"abc") == 3  # retried append
    assert sched.append_logs(task.task_id, 1, 2, b"cde") == 5  # overlapping append
    with pytest.raises(FailedPrecondition):
        sched.append_logs(task.task_id, 1, 9, b"gap")
    chunks = list(sched.stream_logs(task.task_id, 1, 0, follow=False, is_active=lambda: True))
    assert b"".join(c[2] for c in chunks) == b"abcde"


def test_state_survives_restart(plane, engine_factory):
    sched, _broker, _ = plane
    _, (task,) = sched.submit_job("r", "", [TaskSpec(name="a", run="true")])
    sched.dispatch_once()
    again = Scheduler(engine_factory("scheduler"), InProcessBroker(Broker(engine_factory("broker"))))
    assert again.get_task(task.task_id).state == "SCHEDULED"
    assert [w.task_id for w in again.outstanding_work("n1")] == [task.task_id]
    restarted_broker = Broker(engine_factory("broker"))
    assert restarted_broker.get_node("n1").used_cpus == 0.5


def test_stats_counts(plane):
    sched, _, _ = plane
    _, (task,) = sched.submit_job("r", "", [TaskSpec(name="a", run="true")])
    sched.dispatch_once()
    sched.report("n1", task.task_id, 1, "RUNNING", None, "")
    sched.report("n1", task.task_id, 1, "SUCCEEDED", 0, "")
    stats = sched.stats()
    assert stats.tasks_by_state == {"SUCCEEDED": 1} and stats.jobs_total == 1
    assert stats.queue_wait_p50_s >= 0


def _run_to_end(sched: Scheduler, task_id: str, state: str, exit_code: int | None = None) -> None:
    rec = sched.get_task(task_id)
    sched.report(rec.node_id, task_id, rec.attempt, "RUNNING", None, "")
    sched.report(rec.node_id, task_id, rec.attempt, state, exit_code, f"run exited with {exit_code}")


def test_retry_with_backoff_then_success(plane):
    import time

    from styx.scheduler.model import RetryPolicy

    sched, broker, _ = plane
    spec = TaskSpec(name="flaky", run="x", retry=RetryPolicy(max_retries=2, backoff_s=0.2))
    _, (task,) = sched.submit_job("r", "", [spec])
    sched.dispatch_once()
    _run_to_end(sched, task.task_id, "FAILED", 1)
    again = sched.get_task(task.task_id)
    assert again.state == "PENDING" and again.attempt == 1 and again.retry_at is not None
    assert "retry in 0.2 s" in again.failure_reason
    assert broker.get_node("n1").used_cpus == 0  # the failed attempt's CPUs are free
    assert sched.dispatch_once() == 0  # backoff not over yet
    time.sleep(0.25)
    assert sched.dispatch_once() == 1
    assert sched.get_task(task.task_id).attempt == 2
    _run_to_end(sched, task.task_id, "SUCCEEDED", 0)
    kinds = [e.type for e in sched.events_after(0, task_id=task.task_id)]
    assert kinds == ["SUBMITTED", "SCHEDULED", "STARTED", "RETRYING", "SCHEDULED", "STARTED", "SUCCEEDED"]
    assert [e.attempt for e in sched.events_after(0, task_id=task.task_id, states=["SUCCEEDED"])] == [2]


def test_retries_run_out_and_exit_code_filter(plane):
    from styx.scheduler.model import RetryPolicy

    sched, _, _ = plane
    only_75 = TaskSpec(name="a", run="x", retry=RetryPolicy(max_retries=5, backoff_s=0.01, exit_codes=(75,)))
    once = TaskSpec(name="b", run="x", retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    _, (a, b) = sched.submit_job("r", "", [only_75, once])
    sched.dispatch_once()
    _run_to_end(sched, a.task_id, "FAILED", 2)  # 2 is not retried
    assert sched.get_task(a.task_id).state == "FAILED"
    _run_to_end(sched, b.task_id, "FAILED", 1)
    import time

    time.sleep(0.05)
    sched.dispatch_once()
    _run_to_end(sched, b.task_id, "FAILED", 1)
    final = sched.get_task(b.task_id)
    assert (final.state, final.attempt, final.failures) == ("FAILED", 2, 2)


def test_a_starving_task_stops_backfill(plane):
    sched, _, _ = plane
    sched.starvation_s = 0.2
    _, (filler,) = sched.submit_job("f", "", [TaskSpec(name="filler", run="x", resources=Resources(cpus=3))])
    sched.dispatch_once()
    _, (big,) = sched.submit_job("b", "", [TaskSpec(name="big", run="x", priority=5, resources=Resources(cpus=4))])
    _, (small,) = sched.submit_job("s", "", [TaskSpec(name="small", run="x", resources=Resources(cpus=1))])
    assert sched.dispatch_once() == 1  # backfill: the small task runs around the big one
    assert sched.get_task(small.task_id).state == "SCHEDULED"
    import time

    time.sleep(0.25)
    _, (later,) = sched.submit_job("l", "", [TaskSpec(name="later", run="x", resources=Resources(cpus=1))])
    _run_to_end(sched, small.task_id, "SUCCEEDED", 0)
    # The big task has starved long enough: the freed CPU is not given to the later small task.
    assert sched.dispatch_once() == 0
    assert sched.get_task(later.task_id).state == "PENDING"
    _run_to_end(sched, filler.task_id, "SUCCEEDED", 0)
    assert sched.dispatch_once() == 1
    assert sched.get_task(big.task_id).state == "SCHEDULED"


def test_job_state_aggregates_and_cancel_job(plane):
    sched, _, _ = plane
    specs = [TaskSpec(name="a", run="x"), TaskSpec(name="b", run="x", depends_on=("a",))]
    job_id, (_a, b) = sched.submit_job("j", "train", specs)
    assert sched.get_job(job_id).state == "PENDING"
    sched.dispatch_once()
    assert sched.get_job(job_id).state == "RUNNING"
    job = sched.cancel_job(job_id)
    assert job.state == "CANCELLED" and job.task_counts == {"CANCELLED": 2}
    assert [j.name for j in sched.list_jobs()] == ["train"]
    assert sched.get_task(b.task_id).failure_reason == "cancelled by user"


def test_tasks_of_a_lost_node_are_requeued(plane):
    import time

    sched, broker, _ = plane
    broker.lease_seconds = 0.1
    sched.node_fence_s = 0.15  # re-queued once the agent would have fenced itself
    _, (task,) = sched.submit_job("r", "", [TaskSpec(name="a", run="x")])
    sched.dispatch_once()
    sched.report("n1", task.task_id, 1, "RUNNING", None, "")
    time.sleep(0.2)
    broker.reconcile()
    sched.reconcile()
    rec = sched.get_task(task.task_id)
    assert rec.state == "PENDING" and "node n1 was lost" in rec.failure_reason
    broker.register_node("n2", "local", "", Capacity(2, 4))
    assert sched.dispatch_once() == 1
    assert (sched.get_task(task.task_id).node_id, sched.get_task(task.task_id).attempt) == ("n2", 2)
    # A late report from the lost node's old attempt is refused.
    with pytest.raises(FailedPrecondition):
        sched.report("n1", task.task_id, 1, "SUCCEEDED", 0, "")


def test_only_one_replica_dispatches(plane, engine_factory):
    sched, broker, _ = plane
    other = Scheduler(engine_factory("scheduler"), InProcessBroker(broker), lease_s=0.3)
    assert sched.hold_dispatch_lease() is True
    _, tasks = other.submit_job("r", "", [TaskSpec(name=f"t{i}", run="x") for i in range(3)])
    assert other.dispatch_once() == 0  # the first replica holds the lease
    assert sched.dispatch_once() == 3
    seqs = [t.seq for t in tasks]
    _, more = sched.submit_job("r2", "", [TaskSpec(name="u", run="x")])
    assert more[0].seq == max(seqs) + 1  # submission numbers come from the shared counter


def test_a_stopped_replica_hands_the_dispatch_lease_over(plane, engine_factory):
    sched, broker, _ = plane
    successor = Scheduler(engine_factory("scheduler"), InProcessBroker(broker), lease_s=30)
    assert sched.hold_dispatch_lease() is True
    assert successor.hold_dispatch_lease() is False
    sched.stop()
    assert sched.hold_dispatch_lease() is False  # a stopping replica never takes it back
    assert successor.hold_dispatch_lease() is True


def test_a_slow_dispatch_pass_keeps_the_lease(plane, engine_factory):
    """The lease is renewed on its own clock, so a pass longer than the lease does not lose it."""
    import threading
    import time

    _, broker, _ = plane
    entered, release = threading.Event(), threading.Event()

    class StallingBroker(InProcessBroker):
        def allocate(self, asks):
            entered.set()
            release.wait(10)
            return super().allocate(asks)

    holder = Scheduler(engine_factory("scheduler"), StallingBroker(broker), lease_s=1.2)
    rival = Scheduler(engine_factory("scheduler"), InProcessBroker(broker), lease_s=1.2)
    holder.submit_job("r", "", [TaskSpec(name="t", run="x")])
    loop = threading.Thread(target=holder.run_loop, kwargs={"idle_wait_s": 0.05}, daemon=True)
    loop.start()
    try:
        assert entered.wait(5), "the dispatch pass never reached the broker"
        deadline = time.monotonic() + 3.0  # the pass is stalled for 2.5 leases
        while time.monotonic() < deadline:
            assert rival.hold_dispatch_lease() is False, "a stalled pass lost the lease"
            time.sleep(0.05)
    finally:
        release.set()
        holder.stop()
        loop.join(5)
    assert rival.hold_dispatch_lease() is True  # handed over once the holder stopped


def test_a_workdir_goes_only_to_a_node_running_a_task_of_its_job(plane):
    from styx.common.errors import PermissionDenied

    sched, broker, _ = plane
    job_id, (task,) = sched.submit_job("wd", "", [TaskSpec(name="t", run="true")], workdir=b"archive")
    with pytest.raises(PermissionDenied, match="node_id"):
        sched.get_workdir(job_id, "n1")  # not placed yet
    assert sched.dispatch_once() == 1
    assert sched.get_workdir(job_id, "n1") == b"archive"
    broker.register_node("n2", "local", "pid-2", Capacity(1, 1))
    with pytest.raises(PermissionDenied, match="'n2'"):
        sched.get_workdir(job_id, "n2")  # a node that runs nothing of this job
    sched.report("n1", task.task_id, 1, "RUNNING", None, "")
    assert sched.get_workdir(job_id, "n1") == b"archive"
    sched.report("n1", task.task_id, 1, "SUCCEEDED", 0, "")
    with pytest.raises(PermissionDenied):
        sched.get_workdir(job_id, "n1")  # done: nothing left to unpack
    assert sched.get_workdir(job_id) == b"archive"  # the shared token's holder (no node) may read it


def test_only_the_node_that_ran_an_attempt_may_append_to_its_log(plane):
    from styx.common.errors import PermissionDenied
    from styx.scheduler.model import RetryPolicy

    sched, broker, _ = plane
    spec = TaskSpec(name="t", run="true", retry=RetryPolicy(max_retries=1, backoff_s=0.01))
    _, (task,) = sched.submit_job("logs-bound", "", [spec])
    with pytest.raises(PermissionDenied):
        sched.append_logs(task.task_id, 1, 0, b"early", node_id="n1")  # not placed yet
    assert sched.dispatch_once() == 1
    assert sched.append_logs(task.task_id, 1, 0, b"one\n", node_id="n1") == 4
    broker.register_node("n2", "local", "pid-2", Capacity(4, 8))
    with pytest.raises(PermissionDenied, match="'n2' did not run rank 0 of attempt 1"):
        sched.append_logs(task.task_id, 1, 4, b"forged\n", node_id="n2")
    # Attempt 1 fails on n1 and attempt 2 runs on n2: n1 may still ship attempt 1's tail.
    sched.report("n1", task.task_id, 1, "FAILED", 1, "boom")
    broker.deregister_node("n1", "gone")
    wait_until(lambda: sched.dispatch_once() == 1, timeout=10, message="attempt 2 placed")
    assert (sched.get_task(task.task_id).attempt, sched.get_task(task.task_id).node_id) == (2, "n2")
    assert sched.append_logs(task.task_id, 1, 4, b"tail\n", node_id="n1") == 9
    with pytest.raises(PermissionDenied):
        sched.append_logs(task.task_id, 2, 0, b"x", node_id="n1")
    assert sched.append_logs(task.task_id, 2, 0, b"two\n", node_id="n2") == 4
    assert sched.append_logs(task.task_id, 2, 4, b"ops\n") == 8  # the shared token's holder names no node


def test_concurrent_submits_share_a_transaction_and_keep_their_own_jobs(plane):
    """Group commit of SubmitJob: jobs of one round get contiguous submission numbers each, a
    request_id repeated inside the round answers with one job, and nothing is lost."""
    import threading

    sched, _, _ = plane
    results: dict[int, tuple[str, list]] = {}

    def submit(i: int) -> None:
        request = "dup" if i in (3, 4) else f"r{i}"
        specs = [TaskSpec(name=f"t{k}", run="true") for k in range(i % 3 + 1)]
        results[i] = sched.submit_job(request, f"job{i}", specs)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert results[3][0] == results[4][0]  # one job for the repeated request_id
    assert len({job for job, _ in results.values()}) == 11
    for job_id, tasks in results.values():
        stored = sched.list_tasks(job_id=job_id, limit=100, oldest_first=True)
        assert [t.task_id for t in stored] == [t.task_id for t in tasks]
        seqs = [t.seq for t in stored]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len(sched.list_tasks(limit=1000)) == sum(len(t) for i, (_, t) in results.items() if i != 4)


class CountingBroker(InProcessBroker):
    """InProcessBroker that remembers which allocation ids each allocate call carried."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.calls: list[list[str]] = []

    def allocate(self, asks):
        self.calls.append([a.allocation_id for a in asks])
        return super().allocate(asks)


def test_incremental_pass_sends_only_new_tasks_until_capacity_is_freed(engine_factory):
    """A pass woken by a submission re-sent the whole waiting queue to the broker (up to
    2,000 asks per submission); now it sends only what the broker has not answered
    "waiting" since capacity last grew, and everything again after a release."""
    from styx.common.clock import FakeClock

    clock = FakeClock()
    broker = Broker(engine_factory("broker"), StaticOffers())
    port = CountingBroker(broker)
    sched = Scheduler(engine_factory("scheduler"), port, clock=clock)
    broker.register_node("n1", "local", "pid-1", Capacity(2, 8))
    one = Resources(cpus=1)
    _, tasks = sched.submit_job("r1", "", [TaskSpec(name=f"t{i}", run="true", resources=one) for i in range(5)])
    assert sched.dispatch_once(incremental=True) == 2  # two fit, three wait
    assert len(port.calls[-1]) == 5
    _, more = sched.submit_job("r2", "", [TaskSpec(name="late", run="true", resources=one)])
    assert sched.dispatch_once(incremental=True) == 0
    assert port.calls[-1] == [f"{more[0].task_id}/1"]  # only the new task was asked about
    calls = len(port.calls)
    assert sched.dispatch_once(incremental=True) == 0 and len(port.calls) == calls  # nothing new: no call
    running = sched.get_task(tasks[0].task_id)
    sched.report("n1", running.task_id, 1, "RUNNING", None, "")
    sched.report("n1", running.task_id, 1, "SUCCEEDED", 0, "")  # releases: capacity grew
    assert sched.dispatch_once(incremental=True) == 1
    assert len(port.calls[-1]) == 4  # every waiting task is asked about again
    assert sched.dispatch_once(incremental=True) == 0
    calls = len(port.calls)
    clock.advance(1.0)  # a change this process cannot see is found within FULL_PASS_S
    sched.dispatch_once(incremental=True)
    assert len(port.calls) == calls + 1 and len(port.calls[-1]) == 3
    assert sched.dispatch_once() == 0 and len(port.calls[-1]) == 3  # a plain pass is always full


def test_a_pass_skips_like_tasks_behind_a_full_node(engine_factory):
    """Every pass after a release sent the broker the whole ready batch (2,000 asks built,
    sent and answered each way) although, once one task of a kind waits for room, every
    later task of that kind waits too. Now the pass asks in growing chunks and leaves out
    the tasks of a kind the broker already said must wait; other kinds are still asked."""
    from styx.scheduler.dispatch import FIRST_CHUNK

    broker = Broker(engine_factory("broker"), None)
    port = CountingBroker(broker)
    sched = Scheduler(engine_factory("scheduler"), port)
    broker.register_node("n1", "local", "pid-1", Capacity(2, 8))
    like = [TaskSpec(name=f"t{i}", run="true", resources=Resources(cpus=1)) for i in range(100)]
    other = TaskSpec(name="small", run="true", priority=-1, resources=Resources(cpus=1, memory_gib=0.5))
    _, tasks = sched.submit_job("r1", "", [*like, other])
    assert sched.dispatch_once() == 2
    assert [len(c) for c in port.calls] == [FIRST_CHUNK, 1]  # 98 like tasks wait unasked
    assert port.calls[1] == [f"{tasks[-1].task_id}/1"]  # the other kind was still asked
    assert all(sched.get_task(t.task_id).state == "PENDING" for t in tasks[2:])
