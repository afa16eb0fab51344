"""Shared test helpers: free ports, waiting, and starting Styx service processes.

Import as ``from helpers import ...`` (tests/conftest.py puts tests/ on sys.path).
Several authors add helpers here: keep each function self-contained and clearly named.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = "") -> T:
    """Call ``predicate`` until it returns something truthy, and return that value.

    Raises AssertionError with ``message`` (and the last value) after ``timeout`` seconds.
    Exceptions from ``predicate`` propagate: wrap it if failures are expected meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate!r}; last: {value!r}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (reaps it when it is our child)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal check above is all we have


@dataclass
class ServiceProcess:
    """A started service: the process, its endpoint (host:port) and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    endpoint: str
    log_path: Path
    ready_file: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.endpoint.rsplit(":", 1)[1])

    def log_text(self) -> str:
        """Everything the service logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; return the exit code."""
        return stop_process(self.proc, timeout)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Stop a process we started: SIGTERM, then SIGKILL after ``timeout``; return its code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


def start_service(
    module: str,
    args: Sequence[str],
    workdir: Path,
    env: Mapping[str, str] | None = None,
    name: str = "",
    timeout: float = 30.0,
) -> ServiceProcess:
    """Start ``python -m <module> <args> --ready-file ...`` and wait until it is serving.

    ``module`` is e.g. "styx.scheduler"; pass ``--port 0`` (or a free_port()) in ``args``.
    The process's stdout/stderr go to ``workdir/<name>.log``; ``env`` replaces the
    environment (default: a copy of os.environ). Raises AssertionError with the log's tail
    if the process exits or does not write its ready file within ``timeout`` seconds.
    """
    name = name or module.rsplit(".", 1)[-1]
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"{name}.ready"
    ready.unlink(missing_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args, "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=dict(os.environ if env is None else env),
            cwd=str(workdir),
        )
    deadline = time.monotonic() + timeout
    while True:
        if ready.exists():
            text = ready.read_text().strip()
            if text:
                return ServiceProcess(name=name, proc=proc, endpoint=text, log_path=log_path, ready_file=ready)
        code = proc.poll()
        if code is not None:
            raise AssertionError(f"{name} exited with {code} before serving; log:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"{name} did not write {ready} within {timeout}s; log:\n{_tail(log_path)}")
        time.sleep(0.05)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def sky_command() -> list[str]:
    """argv prefix that runs the ``sky`` CLI the way a user would: the installed console script.

    Falls back to ``python -m styx_cli`` when the script is not next to this interpreter.
    """
    script = Path(sys.executable).parent / "sky"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "styx_cli"]


def sky_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a ``sky`` subprocess: own STYX_HOME, no remote endpoint or token."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("STYX_") and k not in ("STYX_TEST_PG_URL", "STYX_LOG_LEVEL"))
    }
    env.update({"STYX_HOME": str(home), "NO_COLOR": "1", **extra})
    return env


def run_sky(
    args: Sequence[str], home: Path, timeout: float = 120.0, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``sky <args>`` with its own STYX_HOME; capture text stdout/stderr."""
    return subprocess.run(
        [*sky_command(), *args],
        env=sky_env(home, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def processes_with_env(name: str, value: str) -> list[int]:
    """Live pids whose environment has ``name=value`` (Linux /proc; [] elsewhere).

    E2E tests use it with STYX_HOME=<their home> to prove nothing outlives `sky local down`.
    """
    wanted = f"{name}={value}".encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------- e2e: the sky CLI

# The local plane needs every service; until they all exist the e2e suite is skipped.
_NEEDED = ("styx.scheduler.main", "styx.broker.main", "styx.provisioner.main", "styx.agent.main")


def _missing_services() -> list[str]:
    missing = []
    for name in _NEEDED:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


class SkyCli:
    """Runs `sky` subprocesses that share one STYX_HOME (so one local control plane)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._plane_id = ""

    def __call__(self, *args: str, timeout: float = 120.0, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``sky <args>``; returns the completed process (text stdout/stderr)."""
        return run_sky(list(args), self.home, timeout=timeout, **env)

    def ok(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``sky <args>`` and assert it exited 0."""
        proc = self(*args, timeout=timeout)
        assert proc.returncode == 0, f"sky {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def task(self, task_id: str) -> dict[str, Any]:
        """The task as `sky status --json ID` shows it."""
        return json.loads(self.ok("status", "--json", task_id).stdout)[0]

    def plane_pids(self) -> dict[str, int]:
        """Pids of the services recorded in plane.json ({} when there is none)."""
        path = self.home / "local" / "plane.json"
        return json.loads(path.read_text())["pids"] if path.exists() else {}

    def leftover_processes(self) -> list[int]:
        """Processes still running with this STYX_HOME (services, agents) or this plane's id
        (tasks too: they do not get STYX_HOME, but inherit STYX_LOCAL_PLANE_ID)."""
        path = self.home / "local" / "plane.json"
        if path.exists():
            self._plane_id = json.loads(path.read_text()).get("plane_id", "") or self._plane_id
        pids = set(processes_with_env("STYX_HOME", str(self.home)))
        if self._plane_id:
            pids |= set(processes_with_env("STYX_LOCAL_PLANE_ID", self._plane_id))
        return sorted(pids)

    def down_and_check(self) -> None:
        """`sky local down`, then assert no service, agent or task process is left."""
        self.leftover_processes()  # note the plane id while plane.json exists
        pids = self.plane_pids()
        proc = self("local", "down", timeout=90)
        assert proc.returncode == 0, proc.stderr
        for svc, pid in pids.items():
            assert not pid_alive(pid), f"{svc} (pid {pid}) survived sky local down"
        assert not (self.home / "local" / "plane.json").exists()
        wait_until(lambda: not self.leftover_processes(), timeout=15, message="processes of this STYX_HOME to exit")


def make_sky_cli(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[SkyCli]:
    """A Sky with a fresh home; always runs `sky local down` at the end so nothing leaks."""
    missing = _missing_services()
    if missing:
        pytest.skip(f"services not written yet: {', '.join(missing)}")
    sky = SkyCli(tmp_path_factory.mktemp(name))
    try:
        yield sky
    finally:
        sky("local", "down", timeout=90)


def lines(text: str) -> Sequence[str]:
    """Non-empty lines."""
    return [ln for ln in text.splitlines() if ln.strip()]


class InProcessBroker:
    """The scheduler's BrokerPort served by a broker core in the same process (no sockets).

    The scheduler and the broker exchange the same ``styx.common.placement`` types, so this
    only adds ``absent_nodes``, which the gRPC adapter reads from ListNodes.
    """

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def allocate(self, asks: Sequence[Any]) -> list[Any]:
        return list(self.broker.allocate(list(asks)))

    def release(self, allocation_id: str) -> None:
        self.broker.release(allocation_id)

    def release_many(self, allocation_ids: list[str]) -> None:
        self.broker.release_many(allocation_ids)

    def absent_nodes(self) -> list[Any]:
        from styx.scheduler.model import AbsentNode

        return [
            AbsentNode(n.node_id, n.state == "GONE", n.last_heartbeat)
            for n in self.broker.list_nodes(include_lost=True)
            if n.state in ("LOST", "GONE")
        ]


@dataclass(kw_only=True)
class ServiceStack:
    """The scheduler, broker and provisioner as real processes, started by hand.

    Ports are picked before start, because a restarted service must come back on the
    address its peers and agents dial. ``flags`` adds arguments per service ("scheduler",
    "broker", "provisioner") or per process name ("scheduler-1"); ``db_urls`` overrides a
    process's store (default: SQLite under ``root/state``). Cloud and crash tests subclass
    it with their fakes.
    """

    root: Path
    token: str
    env: dict[str, str]
    ports: dict[str, int]
    flags: dict[str, list[str]] = field(default_factory=dict)
    db_urls: dict[str, str] = field(default_factory=dict)
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    start_timeout: float = 30.0

    def endpoint(self, name: str) -> str:
        """host:port of a service (or of one replica, e.g. "scheduler-1")."""
        return f"127.0.0.1:{self.ports[name]}"

    def service_args(self, name: str) -> list[str]:
        """Command-line arguments of process ``name``."""
        service = name.split("-")[0]
        db = self.db_urls.get(name) or f"sqlite:///{self.root / 'state' / service}.db"
        args = ["--port", str(self.ports[name]), "--db-url", db]
        if service == "scheduler":
            args += ["--broker", self.endpoint("broker")]
        elif service == "broker":
            args += ["--provisioner", self.endpoint("provisioner")]
        else:
            args += ["--scheduler", self.endpoint("scheduler"), "--broker", self.endpoint("broker")]
        args += self.flags.get(service, [])
        return args + (self.flags.get(name, []) if name != service else [])

    def start(self, *names: str) -> ServiceProcess:
        """Start processes in order (each waits until serving); returns the last one."""
        for name in names:
            self.procs[name] = start_service(
                f"styx.{name.split('-')[0]}",
                self.service_args(name),
                self.root / "logs",
                env=self.env,
                name=name,
                timeout=self.start_timeout,
            )
        return self.procs[names[-1]]

    def diagnosis(self, lines: int = 30) -> str:
        """The last log lines of every service and agent this stack started, for a failure message."""
        logs = sorted(self.root.glob("logs/*.log")) + sorted(self.root.glob("**/vm-logs/*.log"))
        return "\n".join(f"--- {path.name}\n{_tail(path, lines)}" for path in logs)

    def kill9(self, name: str) -> None:
        """SIGKILL a process and reap it (no clean shutdown, like a crash)."""
        proc = self.procs.pop(name).proc
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_services(self) -> None:
        """Stop every process this stack started."""
        for proc in self.procs.values():
            stop_process(proc.proc)
        self.procs.clear()

    def scheduler(self, name: str = "scheduler") -> Any:
        """A Scheduler stub on ``name`` (a replica name works too)."""
        from styx.common.clients import open_channel
        from styx.v1 import scheduler_pb2_grpc

        return scheduler_pb2_grpc.SchedulerStub(open_channel(self.endpoint(name), self.token))

    def broker(self) -> Any:
        """A ResourceBroker stub."""
        from styx.common.clients import open_channel
        from styx.v1 import broker_pb2_grpc

        return broker_pb2_grpc.ResourceBrokerStub(open_channel(self.endpoint("broker"), self.token))

    def provisioner(self) -> Any:
        """A Provisioner stub."""
        from styx.common.clients import open_channel
        from styx.v1 import provisioner_pb2_grpc

        return provisioner_pb2_grpc.ProvisionerStub(open_channel(self.endpoint("provisioner"), self.token))
