"""styx-agent as a real process against an in-test control plane (real gRPC on loopback).

The scheduler and broker are not used here: ``FakeControlPlane`` implements the two
services the agent dials (ResourceBroker and AgentGateway) and records what it receives,
so each test can check exactly what crossed the wire.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers import pid_alive, start_service, stop_process, wait_until
from styx.common.clients import open_channel
from styx.common.errors import NotFound
from styx.common.server import RunningServer, start_server
from styx.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    provisioner_pb2,
    provisioner_pb2_grpc,
)

TOKEN = "test-token-agent"
NODE = "node-1"


class FakeControlPlane(broker_pb2_grpc.ResourceBrokerServicer, agent_pb2_grpc.AgentGatewayServicer):
    """Records registrations, heartbeats, status reports and logs; serves queued work."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.registrations: list[broker_pb2.RegisterNodeRequest] = []
        self.heartbeats = 0
        self.known = True
        # Heartbeats answer UNAVAILABLE while set (a network partition from the broker).
        self.unreachable = False
        self.lease_seconds = 10.0
        self.work: dict[str, queue.Queue[agent_pb2.WorkItem]] = {}
        self.streams_opened = 0
        self.statuses: list[agent_pb2.ReportTaskStatusRequest] = []
        self.status_ids: set[str] = set()
        self.logs: dict[tuple[str, int], bytearray] = {}
        self.workdirs: dict[str, bytes] = {}
        self.workdir_requests: list[agent_pb2.GetWorkdirRequest] = []
        self.log_senders: set[str] = set()

    # ResourceBroker
    def RegisterNode(self, request: broker_pb2.RegisterNodeRequest, context: grpc.ServicerContext) -> common_pb2.Node:
        with self.lock:
            self.registrations.append(request)
            self.known = True
        return common_pb2.Node(node_id=request.node_id, total=request.capacity, state=common_pb2.NODE_STATE_READY)

    def Heartbeat(self, request: broker_pb2.HeartbeatRequest, context: grpc.ServicerContext
                  ) -> broker_pb2.HeartbeatResponse:
        with self.lock:
            self.heartbeats += 1
            if self.unreachable:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the broker is cut off (test)")
            return broker_pb2.HeartbeatResponse(known=self.known, lease_seconds=self.lease_seconds)

    # AgentGateway
    def queue_for(self, node_id: str) -> queue.Queue[agent_pb2.WorkItem]:
        with self.lock:
            return self.work.setdefault(node_id, queue.Queue())

    def WorkStream(self, request: agent_pb2.WorkStreamRequest, context: grpc.ServicerContext
                   ) -> Iterator[agent_pb2.WorkItem]:
        items = self.queue_for(request.node_id)
        with self.lock:
            self.streams_opened += 1
        while context.is_active():
            try:
                yield items.get(timeout=0.1)
            except queue.Empty:
                continue

    def ReportTaskStatus(self, request: agent_pb2.ReportTaskStatusRequest, context: grpc.ServicerContext
                         ) -> agent_pb2.ReportTaskStatusResponse:
        with self.lock:
            if request.request_id not in self.status_ids:  # idempotent, like the real scheduler
                self.status_ids.add(request.request_id)
                self.statuses.append(request)
        return agent_pb2.ReportTaskStatusResponse()

    def AppendLogs(self, request: agent_pb2.AppendLogsRequest, context: grpc.ServicerContext
                   ) -> agent_pb2.AppendLogsResponse:
        with self.lock:
            self.log_senders.add(request.node_id)
            stored = self.logs.setdefault((request.task_id, request.attempt), bytearray())
            if request.offset <= len(stored):
                stored.extend(request.data[len(stored) - request.offset:])
            return agent_pb2.AppendLogsResponse(next_offset=len(stored))

    def GetWorkdir(self, request: agent_pb2.GetWorkdirRequest, context: grpc.ServicerContext
                   ) -> Iterator[agent_pb2.WorkdirChunk]:
        with self.lock:
            self.workdir_requests.append(request)
        data = self.workdirs.get(request.job_id)
        if data is None:
            raise NotFound(f"job {request.job_id!r} not found")  # mapped by the server's interceptor
        for start in range(0, len(data), 1000):  # small chunks, so reassembly is exercised
            yield agent_pb2.WorkdirChunk(data=data[start:start + 1000])

    # test helpers
    def assign(self, task_id: str, run: str, setup: str = "", envs: dict[str, str] | None = None,
               gpu_indices: tuple[int, ...] = (), attempt: int = 1, workdir: str = "", node_id: str = NODE,
               job_id: str = "j-1", has_workdir: bool = False, timeout_s: float = 0) -> None:
        spec = common_pb2.TaskSpec(run=run, setup=setup, envs=envs or {}, workdir=workdir, timeout_s=timeout_s)
        item = agent_pb2.WorkItem(assign=agent_pb2.Assignment(task_id=task_id, job_id=job_id, attempt=attempt,
                                                              spec=spec, gpu_indices=list(gpu_indices),
                                                              has_workdir=has_workdir))
        self.queue_for(node_id).put(item)

    def cancel(self, task_id: str, attempt: int = 1, node_id: str = NODE) -> None:
        item = agent_pb2.WorkItem(cancel=agent_pb2.Cancellation(task_id=task_id, attempt=attempt, reason="user"))
        self.queue_for(node_id).put(item)

    def states(self, task_id: str) -> list[int]:
        with self.lock:
            return [s.state for s in self.statuses if s.task_id == task_id]

    def final(self, task_id: str, timeout: float = 20.0) -> agent_pb2.ReportTaskStatusRequest:
        terminal = {common_pb2.TASK_STATE_SUCCEEDED, common_pb2.TASK_STATE_FAILED, common_pb2.TASK_STATE_CANCELLED}

        def find() -> agent_pb2.ReportTaskStatusRequest | None:
            with self.lock:
                return next((s for s in self.statuses if s.task_id == task_id and s.state in terminal), None)

        return wait_until(find, timeout=timeout, message=f"a final status for {task_id}")

    def log_of(self, task_id: str, attempt: int = 1) -> bytes:
        with self.lock:
            return bytes(self.logs.get((task_id, attempt), b""))


def _serve(fake: FakeControlPlane, port: int = 0) -> RunningServer:
    def register(server: grpc.Server) -> list[str]:
        broker_pb2_grpc.add_ResourceBrokerServicer_to_server(fake, server)
        agent_pb2_grpc.add_AgentGatewayServicer_to_server(fake, server)
        return ["styx.v1.ResourceBroker", "styx.v1.AgentGateway"]

    return start_server("127.0.0.1", port, TOKEN, register, max_workers=16)


@pytest.fixture
def fake() -> Iterator[tuple[FakeControlPlane, RunningServer]]:
    plane = FakeControlPlane()
    server = _serve(plane)
    yield plane, server
    server.stop(0)


class Agent:
    """A running styx-agent process."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, work_dir: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.work_dir = work_dir

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def _start_agent(tmp_path: Path, endpoint: str, *extra: str) -> Agent:
    work_dir = tmp_path / "work"
    log_path = tmp_path / "agent.log"
    env = dict(os.environ, STYX_TOKEN=TOKEN, STYX_LOG_LEVEL="DEBUG")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "styx.agent", "--node-id", NODE, "--scheduler", endpoint, "--broker", endpoint,
             "--cpus", "3", "--memory-gib", "5", "--work-dir", str(work_dir), "--heartbeat-seconds", "0.3", *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )
    return Agent(proc, log_path, work_dir)


@pytest.fixture
def agent(tmp_path: Path, fake: tuple[FakeControlPlane, RunningServer]) -> Iterator[Agent]:
    plane, server = fake
    running = _start_agent(tmp_path, f"127.0.0.1:{server.port}")
    wait_until(lambda: plane.registrations and plane.streams_opened, timeout=15, message="agent to connect")
    yield running
    code = stop_process(running.proc, timeout=15)
    assert code == 0, running.log_text()
    assert TOKEN not in running.log_text()


# Prints the task's process group id (field 5 of /proc/self/stat), not trusting that bash
# itself leads the group (it does today: a new session per task).
ECHO_GROUP = 'echo leader=$(cut -d" " -f5 /proc/$$/stat)'


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def test_registers_with_capacity(agent: Agent, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    reg = plane.registrations[0]
    assert reg.node_id == NODE
    assert (reg.capacity.cpus, reg.capacity.memory_gib) == (3, 5)
    assert reg.provider == "local"
    assert reg.instance_id == f"pid-{agent.proc.pid}"
    assert reg.request_id
    wait_until(lambda: plane.heartbeats >= 2, timeout=5, message="heartbeats")


def test_reregisters_when_the_broker_forgets_the_node(agent: Agent,
                                                      fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    with plane.lock:
        plane.known = False
    wait_until(lambda: len(plane.registrations) >= 2, timeout=5, message="a second registration")


def test_runs_setup_and_run_with_env_and_ships_logs(agent: Agent,
                                                    fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    plane.assign(
        "t-env",
        setup="echo setup-ran",
        run='echo "cuda=$CUDA_VISIBLE_DEVICES foo=$FOO task=$STYX_TASK_ID node=$STYX_NODE_ID '
            'token=${STYX_TOKEN:-none} pwd=$(pwd)"; echo to-stderr >&2',
        envs={"FOO": "bar baz"},
        gpu_indices=(1,),
    )
    final = plane.final("t-env")
    assert final.state == common_pb2.TASK_STATE_SUCCEEDED, (final, agent.log_text())
    assert final.has_exit_code and final.exit_code == 0
    assert final.request_id == "t-env/1/SUCCEEDED"
    assert plane.states("t-env") == [common_pb2.TASK_STATE_RUNNING, common_pb2.TASK_STATE_SUCCEEDED]
    sandbox = agent.work_dir / "tasks" / "t-env-1"
    expected = (f"setup-ran\ncuda=1 foo=bar baz task=t-env node={NODE} token=none pwd={sandbox}\n"
                "to-stderr\n").encode()
    assert plane.log_of("t-env") == expected
    assert (agent.work_dir / "logs" / "t-env-1.log").read_bytes() == expected


def test_no_gpus_means_empty_cuda_visible_devices(agent: Agent, fake: tuple[FakeControlPlane, RunningServer],
                                                  tmp_path: Path) -> None:
    plane, _ = fake
    workdir = tmp_path / "user-dir"
    workdir.mkdir()
    plane.assign("t-nogpu", run='echo "[${CUDA_VISIBLE_DEVICES-unset}] $(pwd)"', workdir=str(workdir))
    assert plane.final("t-nogpu").state == common_pb2.TASK_STATE_SUCCEEDED
    assert plane.log_of("t-nogpu") == f"[] {workdir}\n".encode()


def test_large_output_is_shipped_in_chunks(agent: Agent, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    plane.assign("t-big", run="head -c 300000 /dev/zero | tr '\\0' 'x'; echo")
    assert plane.final("t-big").state == common_pb2.TASK_STATE_SUCCEEDED
    assert plane.log_of("t-big") == b"x" * 300000 + b"\n"


def test_exit_code_3_fails(agent: Agent, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    plane.assign("t-fail", run="echo before; exit 3")
    final = plane.final("t-fail")
    assert final.state == common_pb2.TASK_STATE_FAILED
    assert final.has_exit_code and final.exit_code == 3
    assert final.message == "run exited with 3"
    assert plane.log_of("t-fail") == b"before\n"


def test_failing_setup_skips_run(agent: Agent, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    plane.assign("t-setup", setup="exit 2", run="echo should-not-run")
    final = plane.final("t-setup")
    assert (final.state, final.exit_code, final.message) == (common_pb2.TASK_STATE_FAILED, 2, "setup exited with 2")
    assert plane.log_of("t-setup") == b""


def test_repeated_assignment_runs_once(agent: Agent, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    plane.assign("t-once", run="sleep 0.5; echo once")
    plane.assign("t-once", run="sleep 0.5; echo once")
    assert plane.final("t-once").state == common_pb2.TASK_STATE_SUCCEEDED
    plane.assign("t-once", run="sleep 0.5; echo once")  # after it finished, too
    time.sleep(1.0)
    assert plane.log_of("t-once") == b"once\n"
    assert plane.states("t-once") == [common_pb2.TASK_STATE_RUNNING, common_pb2.TASK_STATE_SUCCEEDED]


def test_cancel_kills_the_whole_process_group(agent: Agent, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    # The child ignores SIGTERM, so stopping it takes the SIGKILL after the grace period.
    plane.assign("t-cancel", run=f"{ECHO_GROUP}; (trap '' TERM; sleep 60) & echo child=$!; sleep 60; wait")
    wait_until(lambda: b"child=" in plane.log_of("t-cancel"), timeout=10, message="the task to start")
    wait_until(lambda: common_pb2.TASK_STATE_RUNNING in plane.states("t-cancel"), timeout=5, message="RUNNING")
    out = dict(line.split("=", 1) for line in plane.log_of("t-cancel").decode().split())
    leader, child = int(out["leader"]), int(out["child"])
    assert _group_members(leader), "the task's process group should be running"
    started = time.monotonic()
    plane.cancel("t-cancel")
    final = plane.final("t-cancel", timeout=20)
    assert final.state == common_pb2.TASK_STATE_CANCELLED
    assert not final.has_exit_code
    elapsed = time.monotonic() - started
    assert 4.5 <= elapsed < 15, f"SIGKILL should follow SIGTERM after the 5 s grace, took {elapsed:.1f}s"
    assert _group_members(leader) == []
    assert not pid_alive(child)
    assert not pid_alive(leader)


def test_cancel_of_an_unknown_attempt_is_confirmed(agent: Agent, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    plane.cancel("t-ghost", attempt=4)
    final = plane.final("t-ghost")
    assert (final.state, final.attempt) == (common_pb2.TASK_STATE_CANCELLED, 4)


def test_sigterm_stops_running_tasks_and_exits_cleanly(tmp_path: Path,
                                                       fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, server = fake
    running = _start_agent(tmp_path, f"127.0.0.1:{server.port}")
    try:
        plane.assign("t-long", run=f"{ECHO_GROUP}; sleep 60")
        wait_until(lambda: b"leader=" in plane.log_of("t-long"), timeout=15, message="the task to start")
        leader = int(plane.log_of("t-long").decode().split("=")[1])
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(20) == 0, running.log_text()
        assert _group_members(leader) == []
        final = plane.final("t-long", timeout=5)
        assert final.state == common_pb2.TASK_STATE_FAILED
        assert "agent stopped" in final.message
    finally:
        stop_process(running.proc)


def test_reconnects_after_the_control_plane_restarts(tmp_path: Path) -> None:
    plane = FakeControlPlane()
    server = _serve(plane)
    port = server.port
    running = _start_agent(tmp_path, f"127.0.0.1:{port}")
    try:
        wait_until(lambda: plane.streams_opened, timeout=15, message="first stream")
        server.stop(0)
        time.sleep(1.0)
        server = _serve(plane, port)  # same address, as a restarted scheduler would be
        wait_until(lambda: plane.streams_opened >= 2, timeout=20, message="the agent to reconnect")
        plane.assign("t-after", run="echo back")
        assert plane.final("t-after").state == common_pb2.TASK_STATE_SUCCEEDED
        assert plane.log_of("t-after") == b"back\n"
    finally:
        assert stop_process(running.proc, timeout=15) == 0, running.log_text()
        server.stop(0)


def test_provisioned_local_agent_joins(tmp_path: Path, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    """The provisioner's local provider starts an agent that registers and runs work."""
    plane, server = fake
    endpoint = f"127.0.0.1:{server.port}"
    env = dict(os.environ, STYX_TOKEN=TOKEN, STYX_LOCAL_NODE_CPUS="2", STYX_LOCAL_NODE_MEMORY_GIB="1")
    prov = start_service("styx.provisioner", ["--port", "0", "--scheduler", endpoint, "--broker", endpoint],
                         tmp_path / "prov", env=env)
    try:
        stub = provisioner_pb2_grpc.ProvisionerStub(open_channel(prov.endpoint, TOKEN))
        offer = common_pb2.Offer(provider="local", region="local", instance_type="host")
        op = stub.Provision(provisioner_pb2.ProvisionRequest(request_id="r-1", node_id="prov-node", offer=offer),
                            timeout=5)
        reg = wait_until(lambda: next((r for r in plane.registrations if r.node_id == "prov-node"), None),
                         timeout=20, message="the provisioned agent to register")
        assert (reg.capacity.cpus, reg.capacity.memory_gib) == (2, 1)
        assert (reg.provider, reg.region, reg.instance_type) == ("local", "local", "host")
        done = stub.GetOperation(provisioner_pb2.GetOperationRequest(operation_id=op.operation_id), timeout=5)
        assert reg.instance_id == done.instance.instance_id
        plane.assign("t-prov", run="echo from-provisioned", node_id="prov-node")
        assert plane.final("t-prov").state == common_pb2.TASK_STATE_SUCCEEDED
        assert plane.log_of("t-prov") == b"from-provisioned\n"
        term = stub.Terminate(provisioner_pb2.TerminateRequest(request_id="t-1", node_id="prov-node"), timeout=5)
        states = list(stub.WatchOperation(provisioner_pb2.WatchOperationRequest(operation_id=term.operation_id),
                                          timeout=30))
        assert states[-1].state == provisioner_pb2.OPERATION_STATE_DONE
        assert not pid_alive(int(reg.instance_id.removeprefix("pid-")))
    finally:
        assert prov.stop() == 0, prov.log_text()


def test_restarted_agent_neither_reruns_nor_orphans_attempts(tmp_path: Path,
                                                             fake: tuple[FakeControlPlane, RunningServer]) -> None:
    """The scheduler re-sends unfinished work to a restarted agent: a finished attempt is
    re-reported, not re-run; one whose agent died mid-run is stopped and reported FAILED.
    """
    plane, server = fake
    endpoint = f"127.0.0.1:{server.port}"
    first = _start_agent(tmp_path, endpoint)
    plane.assign("t-done", run="echo ran")
    assert plane.final("t-done").state == common_pb2.TASK_STATE_SUCCEEDED
    plane.assign("t-mid", run=f"{ECHO_GROUP}; sleep 60")
    wait_until(lambda: b"leader=" in plane.log_of("t-mid"), timeout=15, message="t-mid to start")
    leader = int(plane.log_of("t-mid").decode().split("=")[1])
    first.proc.kill()  # no chance to clean up: its task watcher takes the task down
    first.proc.wait(5)
    wait_until(lambda: _group_members(leader) == [], timeout=5, message="the task to die with its agent")
    second = _start_agent(tmp_path, endpoint)
    try:
        plane.assign("t-done", run="echo ran")
        plane.assign("t-mid", run=f"{ECHO_GROUP}; sleep 60")
        final = plane.final("t-mid", timeout=20)
        assert final.state == common_pb2.TASK_STATE_FAILED
        assert "restarted" in final.message
        assert _group_members(leader) == []
        time.sleep(0.5)
        assert (second.work_dir / "logs" / "t-done-1.log").read_bytes() == b"ran\n"
        assert plane.states("t-done") == [common_pb2.TASK_STATE_RUNNING, common_pb2.TASK_STATE_SUCCEEDED]
    finally:
        assert stop_process(second.proc, timeout=15) == 0, second.log_text()


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_workdir_archive_is_unpacked_into_the_sandbox(agent: Agent,
                                                      fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    plane.workdirs["j-wd"] = _targz({"hello.txt": b"hi from the workdir\n", "sub/data.bin": os.urandom(5000)})
    plane.assign("t-wd", setup="test -f sub/data.bin", run="cat hello.txt", job_id="j-wd", has_workdir=True)
    final = plane.final("t-wd")
    assert final.state == common_pb2.TASK_STATE_SUCCEEDED, final
    assert plane.log_of("t-wd") == b"hi from the workdir\n"
    assert [(r.job_id, r.node_id) for r in plane.workdir_requests] == [("j-wd", NODE)]  # asks as itself
    assert plane.log_senders == {NODE}  # and ships its output as itself


@pytest.mark.parametrize("job,archive,why", [
    ("j-evil", _targz({"../escape.txt": b"x"}), "could not be unpacked"),
    ("j-unknown", None, "not found"),
])
def test_bad_workdir_fails_the_attempt(agent: Agent, fake: tuple[FakeControlPlane, RunningServer],
                                       job: str, archive: bytes | None, why: str) -> None:
    plane, _ = fake
    if archive is not None:
        plane.workdirs[job] = archive
    plane.assign("t-bad-wd", run="echo should-not-run", job_id=job, has_workdir=True)
    final = plane.final("t-bad-wd")
    assert final.state == common_pb2.TASK_STATE_FAILED
    assert why in final.message
    assert not (agent.work_dir / "tasks" / "escape.txt").exists()
    assert plane.log_of("t-bad-wd") == b""


def test_timeout_stops_the_attempt(agent: Agent, fake: tuple[FakeControlPlane, RunningServer]) -> None:
    plane, _ = fake
    started = time.monotonic()
    plane.assign("t-slow", run=f"{ECHO_GROUP}; sleep 30", timeout_s=1)
    final = plane.final("t-slow")
    assert final.state == common_pb2.TASK_STATE_FAILED
    assert final.message == "run timed out after 1 s"
    assert not final.has_exit_code
    assert time.monotonic() - started < 10
    leader = int(plane.log_of("t-slow").decode().split("=")[1])
    assert _group_members(leader) == []
