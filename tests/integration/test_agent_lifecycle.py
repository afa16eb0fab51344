"""A task's processes never outlive their agent (issue 9: no task runs twice at once).

Real agent processes against the in-test control plane of test_agent.py: the agent is
killed with SIGKILL, which gives it no chance to clean up, and the task's processes,
grandchildren included, must be gone before the scheduler could re-queue the task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import test_agent
from test_agent import ECHO_GROUP, FakeControlPlane, _group_members, _start_agent

from helpers import pid_alive, stop_process, wait_until
from styx.agent.reaper import reap_leftovers
from styx.common.server import RunningServer
from styx.v1 import common_pb2

# The in-test control plane fixture ("fake") of test_agent.py, registered here too.
fake = test_agent.fake

# A task with a child and a grandchild (a backgrounded subshell's own background job).
FAMILY = f"{ECHO_GROUP}; sleep 600 & echo child=$!; (sleep 600 & echo grandchild=$!; wait) & sleep 600; wait"


def _family(plane: FakeControlPlane, task_id: str) -> dict[str, int]:
    wait_until(lambda: b"grandchild=" in plane.log_of(task_id), timeout=15, message="the task to start")
    return {k: int(v) for k, v in (line.split("=", 1) for line in plane.log_of(task_id).decode().split())}


def test_killed_agent_takes_its_tasks_down(tmp_path: Path, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, server = fake
    agent = _start_agent(tmp_path, f"127.0.0.1:{server.port}")
    plane.assign("t-long", run=FAMILY)
    pids = _family(plane, "t-long")
    assert _group_members(pids["leader"])
    agent.proc.kill()
    agent.proc.wait(5)
    started = time.monotonic()
    wait_until(lambda: _group_members(pids["leader"]) == [], timeout=5, message="the task to die with its agent")
    assert not pid_alive(pids["child"]) and not pid_alive(pids["grandchild"])
    assert time.monotonic() - started < 2, "a killed agent's task must stop at once"


def _watcher_of(agent_pid: int) -> int:
    """Pid of the agent's task watcher (a child running styx.agent.watcher)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == agent_pid and b"styx.agent.watcher" in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except (OSError, IndexError, ValueError):
            continue
    raise AssertionError(f"agent {agent_pid} has no task watcher")


def test_next_agent_reaps_what_a_killed_watcher_left(
    tmp_path: Path, fake: tuple[FakeControlPlane, RunningServer]
) -> None:
    """Watcher and agent both SIGKILLed (e.g. an OOM kill): the next agent of the node kills
    the recorded process group before it takes any work."""
    plane, server = fake
    endpoint = f"127.0.0.1:{server.port}"
    first = _start_agent(tmp_path, endpoint)
    plane.assign("t-orphan", run=FAMILY)
    pids = _family(plane, "t-orphan")
    watcher = _watcher_of(first.proc.pid)
    os.kill(watcher, signal.SIGKILL)
    wait_until(lambda: not pid_alive(watcher), timeout=5)
    first.proc.kill()
    first.proc.wait(5)
    time.sleep(0.3)
    assert pid_alive(pids["child"]), "nothing left to stop the task: the next agent must"
    second = _start_agent(tmp_path, endpoint)
    try:
        wait_until(lambda: _group_members(pids["leader"]) == [], timeout=10, message="the next agent to reap the task")
        assert not pid_alive(pids["grandchild"])
    finally:
        assert stop_process(second.proc, timeout=15) == 0, second.log_text()


def test_reaper_leaves_an_unrelated_group_alone(tmp_path: Path) -> None:
    """A recycled process group id (another program's group now) is never signalled."""
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True, env={"PATH": os.environ["PATH"]})
    try:
        state = tmp_path / "state"
        state.mkdir()
        (state / "t-x-1.json").write_text(f'{{"phase": "run", "pgid": {stranger.pid}, "task_id": "t-x"}}')
        (state / "t-y-1.json").write_text(f'{{"final": {{"state": "SUCCEEDED"}}, "pgid": {stranger.pid}}}')
        assert reap_leftovers(tmp_path) == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_local_provider_reaps_a_dead_agents_tasks(tmp_path: Path) -> None:
    """When the local provider drops a dead agent's record (so the node is reported gone and
    its tasks re-queued), the processes that agent's tasks left are killed first."""
    from styx_plugins.local.provider import LocalProvider

    dead = subprocess.Popen(["true"])
    dead.wait()
    task = subprocess.Popen(
        ["sleep", "60"], start_new_session=True, env={"PATH": os.environ["PATH"], "STYX_TASK_ID": "t-1"}
    )
    try:
        records = tmp_path / "local" / "instances"
        records.mkdir(parents=True)
        (records / "n1.json").write_text(f'{{"node_id": "n1", "pid": {dead.pid}, "instance_id": "pid-{dead.pid}"}}')
        state = tmp_path / "agents" / "n1" / "state"
        state.mkdir(parents=True)
        (state / "t-1-1.json").write_text(f'{{"phase": "run", "pgid": {task.pid}, "task_id": "t-1"}}')
        assert LocalProvider(tmp_path).list_instances() == []
        assert task.wait(5) == -signal.SIGKILL
        assert not (records / "n1.json").exists()
    finally:
        task.kill()
        task.wait()


def test_agent_that_cannot_renew_its_lease_kills_its_tasks(
    tmp_path: Path, fake: tuple[FakeControlPlane, RunningServer]
) -> None:
    """Cut off from the broker for a whole lease, the agent fences itself: its tasks die
    before the scheduler may re-queue them (lease + margin after the last heartbeat)."""
    plane, server = fake
    plane.lease_seconds = 1.5
    agent = _start_agent(tmp_path, f"127.0.0.1:{server.port}")
    try:
        wait_until(lambda: plane.heartbeats >= 1, timeout=15, message="a first heartbeat")
        plane.assign("t-cut", run=FAMILY)
        pids = _family(plane, "t-cut")
        with plane.lock:
            plane.unreachable = True
        cut = time.monotonic()
        final = plane.final("t-cut", timeout=10)
        assert final.state == common_pb2.TASK_STATE_FAILED and "node fenced" in final.message, final
        assert time.monotonic() - cut < 1.5 + 1.0, "the agent must fence within its lease"
        assert _group_members(pids["leader"]) == [] and not pid_alive(pids["grandchild"])
        plane.assign("t-while-cut", run="echo must-not-run")
        refused = plane.final("t-while-cut", timeout=10)
        assert refused.state == common_pb2.TASK_STATE_FAILED and "node fenced" in refused.message
        assert plane.log_of("t-while-cut") == b""
        with plane.lock:
            plane.unreachable = False
        time.sleep(1.0)  # a renewal or two
        plane.assign("t-after", run="echo ran")
        assert plane.final("t-after", timeout=10).state == common_pb2.TASK_STATE_SUCCEEDED
    finally:
        assert stop_process(agent.proc, timeout=15) == 0, agent.log_text()


def test_agent_the_broker_forgot_kills_its_tasks(
    tmp_path: Path, fake: tuple[FakeControlPlane, RunningServer]
) -> None:
    """known=false (the node was deregistered: GONE, whose tasks re-queue at once): fence now."""
    plane, server = fake
    agent = _start_agent(tmp_path, f"127.0.0.1:{server.port}")
    try:
        plane.assign("t-gone", run=FAMILY)
        pids = _family(plane, "t-gone")
        with plane.lock:
            plane.known = False
        final = plane.final("t-gone", timeout=10)
        assert final.state == common_pb2.TASK_STATE_FAILED and "node fenced" in final.message, final
        assert _group_members(pids["leader"]) == []
    finally:
        assert stop_process(agent.proc, timeout=15) == 0, agent.log_text()


def test_agent_stops_within_2s_of_sigterm_with_tasks_running(
    tmp_path: Path, fake: tuple[FakeControlPlane, RunningServer]
) -> None:
    """Two running tasks, one whose child ignores SIGTERM: the agent still exits (0) within
    2 s, both groups are gone and both attempts were reported FAILED."""
    plane, server = fake
    agent = _start_agent(tmp_path, f"127.0.0.1:{server.port}")
    plane.assign("t-a", run=FAMILY)
    plane.assign("t-b", run=f"{ECHO_GROUP}; (trap '' TERM; sleep 600 & echo child=$!; echo grandchild=0; wait) ; wait")
    groups = [_family(plane, "t-a")["leader"], _family(plane, "t-b")["leader"]]
    started = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    code = stop_process(agent.proc, timeout=2.0)
    took = time.monotonic() - started
    assert code == 0 and took < 2.0, f"exit {code} after {took:.2f}s\n{agent.log_text()[-2000:]}"
    assert all(_group_members(g) == [] for g in groups)
    for task_id in ("t-a", "t-b"):
        assert plane.final(task_id, timeout=1).state == common_pb2.TASK_STATE_FAILED


def test_tasks_survive_a_broker_that_is_down(tmp_path: Path, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    """Nothing listening at the broker's address (it crashed; connection refused) is not a
    partition: no broker can mark the node LOST meanwhile and a restarted one grants fresh
    leases, so the agent keeps its tasks running however long the broker stays down."""
    plane, server = fake
    plane.lease_seconds = 1.0
    agent = _start_agent(tmp_path, f"127.0.0.1:{server.port}")
    try:
        wait_until(lambda: plane.heartbeats >= 1, timeout=15, message="a first heartbeat")
        plane.assign("t-on", run=f"{ECHO_GROUP}; sleep 5; echo finished")
        wait_until(lambda: b"leader=" in plane.log_of("t-on"), timeout=15, message="the task to start")
        leader = int(plane.log_of("t-on").decode().split("=")[1])
        server.stop(0)  # the control plane crashed: its port refuses connections
        time.sleep(3.0)  # three leases
        assert _group_members(leader), "the task was killed while the broker was down"
        back = test_agent._serve(plane, server.port)
        try:
            final = plane.final("t-on", timeout=20)
            assert final.state == common_pb2.TASK_STATE_SUCCEEDED, final
            assert b"finished" in plane.log_of("t-on")
        finally:
            back.stop(0)
    finally:
        assert stop_process(agent.proc, timeout=15) == 0, agent.log_text()
