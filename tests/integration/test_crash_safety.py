"""Crash safety with real processes: kill -9 of the scheduler, the broker and an agent in the
middle of a DAG run, and two scheduler replicas sharing one PostgreSQL.

Each service is a real process on loopback with pre-picked ports (a restarted service must
come back on the same address its peers and agents dial). Tasks append their id to a file,
so "started twice" is observed on the machine, not inferred from the store.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ServiceProcess, ServiceStack, free_port, wait_until
from styx.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.slow

TERMINAL = {
    common_pb2.TASK_STATE_SUCCEEDED,
    common_pb2.TASK_STATE_FAILED,
    common_pb2.TASK_STATE_CANCELLED,
    common_pb2.TASK_STATE_SKIPPED,
}


@dataclass(kw_only=True)
class Stack(ServiceStack):
    """Broker, provisioner and scheduler(s) with the local provider."""

    def stub(self, name: str = "scheduler") -> scheduler_pb2_grpc.SchedulerStub:
        return self.scheduler(name)

    def stop(self) -> None:
        self.stop_services()
        # Agents started by the local provider live in their own sessions: stop them too.
        for record in (self.root / "home" / "local" / "instances").glob("*.json"):
            try:
                pid = int(json.loads(record.read_text()).get("pid", 0))
                if pid:
                    os.killpg(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass


def make_stack(tmp_path: Path, scheduler_db: str = "", replicas: int = 1) -> Stack:
    token = secrets.token_hex(16)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "STYX_HOME": str(home),
        "STYX_TOKEN": token,
        "STYX_LOCAL_NODE_CPUS": "16",
        "STYX_LOCAL_NODE_MEMORY_GIB": "16",
        "STYX_LOG_LEVEL": "INFO",
    }
    names = [
        "broker",
        "provisioner",
        *(["scheduler"] if replicas == 1 else [f"scheduler-{i}" for i in range(replicas)]),
    ]
    ports = {n: free_port() for n in names}
    if replicas > 1:
        ports["scheduler"] = ports["scheduler-0"]  # agents dial replica 0
    db_urls = {n: f"sqlite:///{tmp_path / 'state' / n.split('-')[0]}.db" for n in names}
    if scheduler_db:
        db_urls.update({n: scheduler_db for n in names if n.startswith("scheduler")})
    flags = {"scheduler": ["--dispatch-lease-seconds", "3"], "broker": ["--lease-seconds", "4"]}
    return Stack(root=tmp_path, env=env, token=token, ports=ports, db_urls=db_urls, flags=flags)


def replica_id(proc: ServiceProcess) -> str:
    for line in proc.log_text().splitlines():
        if '"msg": "serving"' in line:
            return str(json.loads(line)["replica"])
    raise AssertionError(f"{proc.name} logged no serving line")


def lease_holder(db_url: str) -> str:
    from sqlalchemy import text

    from styx.common.store import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT holder FROM sched_leases WHERE name = 'dispatcher'")).scalar())
    finally:
        engine.dispose()


def submit(stub: scheduler_pb2_grpc.SchedulerStub, tasks: list[common_pb2.TaskSpec]) -> scheduler_pb2.SubmitJobResponse:
    request = scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=scheduler_pb2.JobSpec(tasks=tasks))
    return stub.SubmitJob(request, timeout=60)


def dag(width: int, depth: int, out: Path, fail: tuple[int, int] | None = None) -> list[common_pb2.TaskSpec]:
    """``width`` chains of ``depth`` tasks; task (c, d) depends on (c, d-1)."""
    specs = []
    for c in range(width):
        for d in range(depth):
            run = f'echo "$STYX_TASK_ID" >> {out}; sleep 0.05'
            if fail == (c, d):
                run += "; exit 7"
            specs.append(
                common_pb2.TaskSpec(
                    name=f"c{c}-d{d}",
                    run=run,
                    resources=common_pb2.ResourceRequest(cpus=0.5),
                    depends_on=[f"c{c}-d{d - 1}"] if d else [],
                )
            )
    return specs


def task_states(stub: scheduler_pb2_grpc.SchedulerStub, job_id: str) -> dict[str, common_pb2.Task]:
    tasks = stub.ListTasks(scheduler_pb2.ListTasksRequest(job_id=job_id, limit=10000), timeout=30).tasks
    return {t.spec.name: t for t in tasks}


def count_state(stub: scheduler_pb2_grpc.SchedulerStub, job_id: str, states: set[int]) -> int:
    try:
        return sum(1 for t in task_states(stub, job_id).values() if t.state in states)
    except Exception:
        return 0  # the scheduler is restarting


def check_run(stack: Stack, job_id: str, out: Path, width: int, depth: int, fail: tuple[int, int]) -> None:
    """Every task ended exactly once in its right state; each started once; no event lost."""
    stub = stack.stub()
    wait_until(
        lambda: count_state(stub, job_id, TERMINAL) == width * depth, timeout=180, interval=0.5, message="all terminal"
    )
    tasks = task_states(stub, job_id)
    fc, fd = fail
    for name, task in tasks.items():
        c, d = (int(x[1:]) for x in name.split("-"))
        if (c, d) == fail:
            assert task.state == common_pb2.TASK_STATE_FAILED and task.exit_code == 7, task
        elif c == fc and d > fd:
            assert task.state == common_pb2.TASK_STATE_SKIPPED and f"c{fc}-d{fd}" in task.failure_reason
        else:
            assert task.state == common_pb2.TASK_STATE_SUCCEEDED, (name, task.state, task.failure_reason)
    starts = Counter(out.read_text().split())
    ran = {t.task_id for t in tasks.values() if t.state != common_pb2.TASK_STATE_SKIPPED}
    assert set(starts) == ran
    twice = {task_id: n for task_id, n in starts.items() if n > 1}
    assert not twice, f"tasks started more than once: {twice}"
    events = list(stub.WatchEvents(scheduler_pb2.WatchEventsRequest(job_id=job_id, no_follow=True), timeout=60))
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), "event seqs repeat or go backwards"
    per_task: dict[str, list[int]] = {}
    for e in events:
        per_task.setdefault(e.task_id, []).append(e.type)
    for task in tasks.values():
        kinds = per_task[task.task_id]
        assert kinds[0] == common_pb2.EVENT_TYPE_SUBMITTED and kinds.count(common_pb2.EVENT_TYPE_SUBMITTED) == 1
        terminal = [k for k in kinds if k in (4, 5, 6, 8)]
        assert len(terminal) == 1, (task.spec.name, kinds)
        if task.state == common_pb2.TASK_STATE_SUCCEEDED:
            assert kinds == [1, 2, 3, 4], (task.spec.name, kinds)


@pytest.mark.parametrize("victim", ["scheduler", "broker"])
def test_kill9_mid_dag_then_restart(tmp_path: Path, victim: str) -> None:
    width, depth, fail = 50, 10, (3, 4)
    stack = make_stack(tmp_path)
    out = tmp_path / "started.txt"
    try:
        for name in ("broker", "provisioner", "scheduler"):
            stack.start(name)
        job = submit(stack.stub(), dag(width, depth, out, fail))
        done = {common_pb2.TASK_STATE_SUCCEEDED}
        wait_until(lambda: count_state(stack.stub(), job.job_id, done) >= 120, timeout=120, interval=0.2)
        stack.kill9(victim)
        stack.start(victim)
        check_run(stack, job.job_id, out, width, depth, fail)
    finally:
        stack.stop()


def test_killed_agent_work_is_requeued(tmp_path: Path) -> None:
    """An agent killed with -9: after the lease its node is LOST, its tasks run elsewhere."""
    stack = make_stack(tmp_path)
    out = tmp_path / "started.txt"
    try:
        for name in ("broker", "provisioner", "scheduler"):
            stack.start(name)
        specs = [common_pb2.TaskSpec(name=f"t{i}", run=f'echo "$STYX_TASK_ID" >> {out}; sleep 2') for i in range(8)]
        job = submit(stack.stub(), specs)
        running = {common_pb2.TASK_STATE_RUNNING}
        wait_until(lambda: count_state(stack.stub(), job.job_id, running) >= 4, timeout=60, interval=0.2)
        victims = {t.node_id for t in task_states(stack.stub(), job.job_id).values() if t.node_id}
        for record in (tmp_path / "home" / "local" / "instances").glob("*.json"):
            data = json.loads(record.read_text())
            if data.get("node_id") in victims or record.stem in victims:
                os.kill(int(data["pid"]), signal.SIGKILL)
        wait_until(
            lambda: count_state(stack.stub(), job.job_id, TERMINAL) == 8, timeout=120, interval=0.5, message="all done"
        )
        tasks = task_states(stack.stub(), job.job_id).values()
        assert all(t.state == common_pb2.TASK_STATE_SUCCEEDED for t in tasks), [
            (t.spec.name, t.failure_reason) for t in tasks
        ]
        requeued = [t for t in tasks if t.attempt > 1]
        assert requeued, "no task was re-queued after its agent died"
        assert all(t.node_id not in victims for t in requeued)
    finally:
        stack.stop()


def test_a_killed_agents_task_never_overlaps_its_next_attempt(tmp_path: Path) -> None:
    """kill -9 of an agent mid-task (issue 9): the attempt's processes die with the agent,
    and the next attempt starts only once they are gone. Each attempt takes an exclusive
    flock that its processes hold until they exit, so an overlap is seen by the next one."""
    stack = make_stack(tmp_path)
    lock, runs = tmp_path / "task.lock", tmp_path / "runs.txt"
    # The first attempt would run for a minute (its agent is killed meanwhile); later ones end soon.
    run = (
        f'exec 9>{lock}; if flock -n 9; then echo "ok-$STYX_TASK_ID" >> {runs}; '
        f'else echo "OVERLAP-$STYX_TASK_ID" >> {runs}; fi; '
        f'if [ "$(wc -l < {runs})" -eq 1 ]; then sleep 60 & sleep 60; else sleep 1; fi'
    )
    try:
        for name in ("broker", "provisioner", "scheduler"):
            stack.start(name)
        job = submit(stack.stub(), [common_pb2.TaskSpec(name="once", run=run)])
        running = {common_pb2.TASK_STATE_RUNNING}
        wait_until(lambda: count_state(stack.stub(), job.job_id, running) == 1, timeout=60, interval=0.2)
        wait_until(runs.exists, timeout=10)
        (task,) = task_states(stack.stub(), job.job_id).values()
        for record in (tmp_path / "home" / "local" / "instances").glob("*.json"):
            data = json.loads(record.read_text())
            if data.get("node_id") == task.node_id:
                os.kill(int(data["pid"]), signal.SIGKILL)
        wait_until(
            lambda: count_state(stack.stub(), job.job_id, {common_pb2.TASK_STATE_SUCCEEDED}) == 1,
            timeout=120,
            interval=0.5,
            message="the task to succeed on a new node",
        )
        (task,) = task_states(stack.stub(), job.job_id).values()
        assert task.attempt == 2
        assert runs.read_text().split() == [f"ok-{task.task_id}"] * 2, "an attempt ran beside the killed one"
    finally:
        stack.stop()


def test_two_scheduler_replicas_never_dispatch_twice(tmp_path: Path, postgres_fresh_url: str) -> None:
    """Two schedulers on one PostgreSQL; clients use both; the dispatching one is killed."""
    width, depth, fail = 20, 10, (1, 2)
    stack = make_stack(tmp_path, scheduler_db=postgres_fresh_url, replicas=2)
    out = tmp_path / "started.txt"
    try:
        for name in ("broker", "provisioner", "scheduler-1", "scheduler-0"):
            stack.start(name)
        # Replica 1 started first, so it holds the dispatch lease; agents dial replica 0.
        specs = dag(width, depth, out, fail)
        half = len(specs) // 2
        job_a = submit(stack.stub("scheduler-0"), specs[:half])
        job_b = submit(stack.stub("scheduler-1"), [s for s in specs[half:]])
        assert job_a.job_id != job_b.job_id
        done = {common_pb2.TASK_STATE_SUCCEEDED}
        wait_until(lambda: count_state(stack.stub(), job_a.job_id, done) >= 30, timeout=120, interval=0.2)
        assert lease_holder(postgres_fresh_url) == replica_id(stack.procs["scheduler-1"])
        stack.kill9("scheduler-1")
        wait_until(
            lambda: (
                count_state(stack.stub(), job_a.job_id, TERMINAL) == half
                and count_state(stack.stub(), job_b.job_id, TERMINAL) == len(specs) - half
            ),
            timeout=180,
            interval=0.5,
        )
        starts = Counter(out.read_text().split())
        assert starts and max(starts.values()) == 1, {k: v for k, v in starts.items() if v > 1}
        failed = [
            t for t in task_states(stack.stub(), job_a.job_id).values() if t.state == common_pb2.TASK_STATE_FAILED
        ]
        assert [t.spec.name for t in failed] == ["c1-d2"]
        # Replica 0 took the dispatch lease over once replica 1 died.
        assert lease_holder(postgres_fresh_url) == replica_id(stack.procs["scheduler-0"])
    finally:
        stack.stop()
