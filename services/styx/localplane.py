"""The local control plane: scheduler, broker and provisioner as background processes.

With no endpoint configured, ``sky`` runs Styx "embedded": the three services listen on
loopback, keep SQLite state under the Styx home, and the provisioner's local provider
starts agents on this machine. This module starts, finds, checks and stops that plane.
The CLI, the integration tests and the benchmarks all go through it.

Layout under the Styx home (``$STYX_HOME``, default ``~/.styx``)::

    local/token        random bearer token, mode 0600, reused across restarts
    local/plane.json   {"scheduler": "127.0.0.1:P", "broker": ..., "provisioner": ...,
                        "pids": {"scheduler": 123, ...}, "plane_id": ..., "started_at": ...}
    local/plane.lock   flock'ed while starting or stopping, so two ``sky`` runs that race
                       start one plane, not two
    local/tls/         with ``sky local up --tls``: the plane's private CA and certificate
                       (``styx.localtls``); while it is there, the plane serves TLS
    local/logs/<svc>.log   each service's stderr (JSON log lines)
    local/run/<svc>.ready  ready files the services write once serving
    state/<svc>.db     each service's SQLite store (kept across restarts)

Ports are chosen before any process starts because the services name each other on
their command lines; that also makes start order irrelevant. grpc is imported only by the
functions that need it (health checks, terminating agents), so reading the plane's
status stays cheap for the CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from styx.common.config import CREDENTIAL_ENV, TOKEN_STDIN_ENV

if TYPE_CHECKING:
    import grpc

SERVICES = ("scheduler", "broker", "provisioner")
HOST = "127.0.0.1"
# Seconds to wait for every service to answer SERVING; first start imports grpc and
# SQLAlchemy and creates tables, which takes a few seconds on a slow disk.
DEFAULT_START_TIMEOUT_S = float(os.environ.get("STYX_LOCAL_START_TIMEOUT", "60"))
# Seconds a service gets after SIGTERM before SIGKILL.
STOP_GRACE_S = 10.0
# How long `stop` may spend asking the provisioner to terminate agents.
TERMINATE_AGENTS_TIMEOUT_S = 15.0
# How long to wait for the lock held by another `sky` that is starting the plane.
LOCK_TIMEOUT_S = 120.0
# Environment marker put on every process of one plane, so `stop` can find processes
# (agents, their tasks) that outlived the provisioner, without trusting recycled pids.
PLANE_ID_ENV = "STYX_LOCAL_PLANE_ID"


class PlaneError(Exception):
    """The local control plane could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class Paths:
    """Where the local plane keeps its files under one Styx home."""

    home: Path

    @property
    def local(self) -> Path:
        """Directory of the plane's own files."""
        return self.home / "local"

    @property
    def plane_file(self) -> Path:
        """JSON record of the running plane's endpoints and pids."""
        return self.local / "plane.json"

    @property
    def lock_file(self) -> Path:
        """File locked while starting or stopping."""
        return self.local / "plane.lock"

    @property
    def token_file(self) -> Path:
        """Bearer token shared by the services and the CLI (mode 0600)."""
        return self.local / "token"

    @property
    def tls_dir(self) -> Path:
        """Directory of the plane's own CA and certificate (``sky local up --tls``)."""
        return self.local / "tls"

    @property
    def logs(self) -> Path:
        """Directory of the services' log files."""
        return self.local / "logs"

    def log_file(self, service: str) -> Path:
        """Log file of one service."""
        return self.logs / f"{service}.log"

    def ready_file(self, service: str) -> Path:
        """Ready file one service writes once serving."""
        return self.local / "run" / f"{service}.ready"

    def db_url(self, service: str) -> str:
        """SQLite URL of one service's store."""
        return f"sqlite:///{self.home / 'state' / f'{service}.db'}"


@dataclass(frozen=True)
class Plane:
    """A local control plane: the services' endpoints, pids and the shared token."""

    home: Path
    scheduler: str
    broker: str
    provisioner: str
    pids: dict[str, int]
    plane_id: str = ""
    started_at: float = 0.0
    # False between spawning and every service answering SERVING: another `sky` that
    # sees an unready record waits on the lock instead of calling a half-started plane.
    ready: bool = False
    # repr=False: the token must never end up in a log line or an error message.
    token: str = field(default="", repr=False)
    #: CA file the services' certificates chain to, when they serve TLS with a private CA.
    tls_ca: str = ""
    #: Whether the services serve TLS (then clients verify against ``tls_ca`` or, when
    #: that is empty, as STYX_TLS / STYX_TLS_CA in the environment say).
    tls: bool = False

    def endpoint(self, service: str) -> str:
        """host:port of ``service`` ("scheduler", "broker" or "provisioner")."""
        return {"scheduler": self.scheduler, "broker": self.broker, "provisioner": self.provisioner}[service]

    def to_json(self) -> dict[str, object]:
        """What plane.json holds (everything but the token, which has its own file)."""
        return {
            "scheduler": self.scheduler,
            "broker": self.broker,
            "provisioner": self.provisioner,
            "pids": dict(self.pids),
            "plane_id": self.plane_id,
            "started_at": self.started_at,
            "ready": self.ready,
            "tls": self.tls,
            "tls_ca": self.tls_ca,
        }


@dataclass(frozen=True)
class ServiceStatus:
    """One service of the plane as observed now."""

    name: str
    endpoint: str
    pid: int
    alive: bool
    # "SERVING", "NOT_SERVING", "UNREACHABLE" or "" when not checked.
    health: str = ""
    log_file: str = ""


@dataclass(frozen=True)
class PlaneStatus:
    """Result of :func:`status`: is a plane recorded, and is it alive."""

    home: Path
    plane: Plane | None
    services: tuple[ServiceStatus, ...] = ()

    @property
    def running(self) -> bool:
        """True when a plane is recorded, finished starting, and all its processes are alive."""
        return (
            self.plane is not None and self.plane.ready and bool(self.services) and all(s.alive for s in self.services)
        )

    @property
    def stale(self) -> bool:
        """True when plane.json exists but some of its processes are gone."""
        return self.plane is not None and not self.running


# ---------------------------------------------------------------------------- public API


def ensure(home: Path | None = None, timeout: float = DEFAULT_START_TIMEOUT_S, tls: bool | None = None) -> Plane:
    """Return the running plane of ``home``, starting one first when none is running.

    The fast path (plane.json present, every pid alive) takes no lock and imports no grpc.
    ``tls`` as for :func:`start`.
    """
    paths = Paths(_home(home))
    plane = _read_plane(paths)
    if plane is not None and plane.ready and all(_alive(pid, svc) for svc, pid in plane.pids.items()):
        _check_tls_wish(plane, tls)
        return plane
    return start(paths.home, timeout=timeout, tls=tls)


def _check_tls_wish(plane: Plane, tls: bool | None) -> None:
    if tls is not None and tls != plane.tls:
        now, wanted = ("with", "") if plane.tls else ("without", " --tls")
        raise PlaneError(
            f"the local control plane is running {now} TLS; `sky local down`, then `sky local up{wanted}`"
        )


def start(home: Path | None = None, timeout: float = DEFAULT_START_TIMEOUT_S, tls: bool | None = None) -> Plane:
    """Start the plane of ``home`` and wait until every service answers SERVING.

    Idempotent: when the plane is already running it is returned unchanged. A stale plane
    (plane.json with some of its processes dead, e.g. after a crash) gets only its dead
    services started again, on their recorded ports: the live services, the agents and
    the tasks they run are left alone, so nothing runs twice. Stored state (the SQLite
    files) survives either way. Raises :class:`PlaneError` naming the log file of a
    service that died or did not become healthy in ``timeout`` seconds.

    ``tls``: True serves TLS with the home's own CA (made under ``local/tls`` when absent),
    False plaintext (and forgets that CA), None as the home did last time (TLS while
    ``local/tls`` is there). ``STYX_TLS_CERT`` / ``STYX_TLS_KEY`` in the environment
    instead serve the user's own certificate (then ``STYX_TLS_CA`` or ``STYX_TLS=1`` say
    how to verify it). A running plane is returned as is, unless ``tls`` contradicts it.
    """
    paths = Paths(_home(home))
    with _locked(paths):
        current = status(paths.home)
        if current.running and current.plane is not None:
            _check_tls_wish(current.plane, tls)
            return current.plane
        if current.plane is not None:
            # Some process died, or a starter was killed before the plane became ready
            # (we hold the lock, so nobody is starting it now).
            dead = [s.name for s in current.services if not s.alive]
            busy = [svc for svc in dead if not _port_free(current.plane.endpoint(svc))]
            if busy and len(dead) == len(SERVICES):
                # Nothing of the plane serves and its ports went to other programs (after a
                # reboot, say): start afresh on new ports, as agents could not dial the old.
                _stop_locked(paths, current.plane)
                return _start_locked(paths, timeout, tls)
            if busy:
                raise PlaneError(
                    f"the {busy[0]} died and its port {current.plane.endpoint(busy[0])} is now taken by "
                    "another program; `sky local down` stops the whole plane (and its running tasks), "
                    "then `sky local up` starts one on new ports"
                )
            _check_tls_wish(current.plane, tls)
            return _restart_dead_locked(paths, current.plane, dead, timeout)
        return _start_locked(paths, timeout, tls)


def stop(home: Path | None = None) -> bool:
    """Stop the plane of ``home``: its agents, then the three services; remove plane.json.

    Returns True when a plane (running or stale) was recorded, False when there was none.
    """
    paths = Paths(_home(home))
    with _locked(paths):
        plane = _read_plane(paths)
        if plane is None:
            return False
        _stop_locked(paths, plane)
        return True


def status(home: Path | None = None, check_health: bool = False) -> PlaneStatus:
    """Observe the plane of ``home``: recorded endpoints, live pids and, optionally, health."""
    paths = Paths(_home(home))
    plane = _read_plane(paths)
    if plane is None:
        return PlaneStatus(home=paths.home, plane=None)
    services = []
    for svc in SERVICES:
        pid = plane.pids.get(svc, 0)
        alive = bool(pid) and _alive(pid, svc)
        health = ""
        if check_health:
            health = _health(plane, svc, timeout=2.0) if alive else "UNREACHABLE"
        services.append(
            ServiceStatus(
                name=svc,
                endpoint=plane.endpoint(svc),
                pid=pid,
                alive=alive,
                health=health,
                log_file=str(paths.log_file(svc)),
            )
        )
    return PlaneStatus(home=paths.home, plane=plane, services=tuple(services))


def read_token(home: Path | None = None) -> str:
    """The local plane's token, creating it (0600) on first use."""
    return _ensure_token(Paths(_home(home)))


# ---------------------------------------------------------------------------- start


def _start_locked(paths: Paths, timeout: float, tls: bool | None) -> Plane:
    for directory in (paths.local, paths.logs, paths.ready_file("x").parent, paths.home / "state"):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)  # state (secret env values), logs, token: the user's alone
    token = _ensure_token(paths)
    ports = _free_ports(len(SERVICES))
    endpoints = {svc: f"{HOST}:{port}" for svc, port in zip(SERVICES, ports, strict=True)}
    plane_id = uuid.uuid4().hex
    serves_tls, tls_ca, tls_env = _tls_setup(paths, tls)
    env = {**_service_env(paths, token, plane_id), **tls_env}

    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for svc in SERVICES:
            paths.ready_file(svc).unlink(missing_ok=True)
            started[svc] = _spawn(paths, svc, endpoints, env, token)
        plane = Plane(
            home=paths.home,
            plane_id=plane_id,
            started_at=time.time(),
            pids={svc: proc.pid for svc, proc in started.items()},
            token=token,
            scheduler=endpoints["scheduler"],
            broker=endpoints["broker"],
            provisioner=endpoints["provisioner"],
            tls=serves_tls,
            tls_ca=tls_ca,
        )
        # Record before waiting: if we are interrupted while waiting, `stop` still finds them.
        _write_plane(paths, plane)
        _wait_healthy(paths, plane, started, timeout)
        plane = dataclasses.replace(plane, ready=True)
        _write_plane(paths, plane)
        return plane
    except BaseException:
        partial = Plane(
            home=paths.home,
            plane_id=plane_id,
            pids={svc: proc.pid for svc, proc in started.items()},
            token=token,
            scheduler=endpoints["scheduler"],
            broker=endpoints["broker"],
            provisioner=endpoints["provisioner"],
            tls=serves_tls,
            tls_ca=tls_ca,
        )
        _stop_locked(paths, partial, terminate_agents=False)
        raise


def _restart_dead_locked(paths: Paths, plane: Plane, dead: list[str], timeout: float) -> Plane:
    """Start the ``dead`` services of ``plane`` again on their recorded ports, with the same
    plane id: agents dial those endpoints, so they reconnect by themselves."""
    token = plane.token or _ensure_token(paths)
    endpoints = {svc: plane.endpoint(svc) for svc in SERVICES}
    for directory in (paths.local, paths.logs, paths.ready_file("x").parent, paths.home / "state"):
        directory.mkdir(parents=True, exist_ok=True)
    _, _, tls_env = _tls_setup(paths, plane.tls)
    env = {**_service_env(paths, token, plane.plane_id or uuid.uuid4().hex), **tls_env}
    started: dict[str, subprocess.Popen[bytes]] = {}
    for svc in dead:
        paths.ready_file(svc).unlink(missing_ok=True)
        started[svc] = _spawn(paths, svc, endpoints, env, token)
    pids = {**plane.pids, **{svc: proc.pid for svc, proc in started.items()}}
    plane = dataclasses.replace(plane, pids=pids, ready=False, token=token)
    _write_plane(paths, plane)  # before waiting: an interrupted start is still found by `stop`
    try:
        _wait_healthy(paths, plane, started, timeout)
    except PlaneError as exc:
        raise PlaneError(
            f"{exc}\n  only the dead services were restarted, on their recorded ports; "
            "`sky local down` stops the whole plane (and its running tasks), then `sky local up`"
        ) from None
    plane = dataclasses.replace(plane, ready=True)
    _write_plane(paths, plane)
    return plane


def _service_args(paths: Paths, svc: str, endpoints: dict[str, str]) -> list[str]:
    port = endpoints[svc].rsplit(":", 1)[1]
    args = [
        sys.executable,
        "-m",
        f"styx.{svc}",
        "--host",
        HOST,
        "--port",
        port,
        "--db-url",
        paths.db_url(svc),
        "--ready-file",
        str(paths.ready_file(svc)),
    ]
    if svc == "scheduler":
        args += ["--broker", endpoints["broker"]]
    elif svc == "broker":
        args += ["--provisioner", endpoints["provisioner"]]
    elif svc == "provisioner":
        args += ["--scheduler", endpoints["scheduler"], "--broker", endpoints["broker"]]
    return args


def _tls_setup(paths: Paths, tls: bool | None) -> tuple[bool, str, dict[str, str]]:
    """Whether the plane serves TLS, the CA its clients verify against, and the services'
    extra environment (see :func:`start` for what ``tls`` means)."""
    if os.environ.get("STYX_TLS_CERT") or os.environ.get("STYX_TLS_KEY"):
        if tls is False:
            raise PlaneError("STYX_TLS_CERT / STYX_TLS_KEY are set: unset them for a plaintext plane")
        verify = {k: os.environ[k] for k in ("STYX_TLS", "STYX_TLS_CA", "STYX_TLS_SERVER_NAME") if k in os.environ}
        return True, os.environ.get("STYX_TLS_CA", ""), verify
    if tls is False:
        shutil.rmtree(paths.tls_dir, ignore_errors=True)
        return False, "", {}
    if tls is None and not paths.tls_dir.is_dir():
        return False, "", {}
    from styx import localtls

    try:
        files = localtls.ensure(paths.tls_dir)
    except (localtls.TlsSetupError, OSError) as exc:
        raise PlaneError(f"cannot set up TLS in {paths.tls_dir}: {exc}") from None
    return True, str(files.ca), files.service_env()


def _service_env(paths: Paths, token: str, plane_id: str) -> dict[str, str]:
    env = dict(os.environ)
    # Client-side settings of the user's shell must not leak into the services: flags
    # name every endpoint explicitly. The token goes to each service's stdin (_spawn), not
    # into its environment, where the tasks the plane runs (same user) could read it from
    # /proc/<pid>/environ.
    # TLS settings come from _tls_setup alone: a STYX_TLS_CA meant for a remote plane would
    # make the services dial their plaintext peers with TLS.
    for key in ("STYX_ENDPOINT", "STYX_TLS", "STYX_TLS_CA", "STYX_TLS_SERVER_NAME", *CREDENTIAL_ENV):
        env.pop(key, None)
    env.update(
        {
            "STYX_HOME": str(paths.home),
            TOKEN_STDIN_ENV: "1",
            PLANE_ID_ENV: plane_id,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _spawn(
    paths: Paths, svc: str, endpoints: dict[str, str], env: dict[str, str], token: str
) -> subprocess.Popen[bytes]:
    # Logs, databases and everything the service creates are private (0600 / 0700).
    previous = os.umask(0o077)
    try:
        with open(paths.log_file(svc), "ab") as log:
            # start_new_session: the service outlives the CLI and does not get the terminal's
            # Ctrl-C; stdin is a pipe that carries the token, then closes (never the terminal).
            proc = subprocess.Popen(
                _service_args(paths, svc, endpoints),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=env,
                cwd=str(paths.home),
                start_new_session=True,
                close_fds=True,
            )
    finally:
        os.umask(previous)
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(token.encode() + b"\n")
    proc.stdin.close()
    return proc


def _wait_healthy(paths: Paths, plane: Plane, procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(SERVICES)
    while pending:
        for svc in sorted(pending):
            proc = procs.get(svc)  # None: a service left running, not started here
            code = proc.poll() if proc is not None else (None if _alive(plane.pids[svc], svc) else -1)
            if code is not None:
                how = f"exited with code {code}" if proc is not None else "died"
                raise PlaneError(
                    f"the {svc} {how} while starting; see its log: "
                    f"{paths.log_file(svc)}{_last_line(paths.log_file(svc))}"
                )
            if _health(plane, svc, timeout=1.0) == "SERVING":
                pending.discard(svc)
        if not pending:
            return
        if time.monotonic() > deadline:
            svc = sorted(pending)[0]
            raise PlaneError(
                f"the {svc} did not become healthy within {timeout:.0f}s; see its log: "
                f"{paths.log_file(svc)}{_last_line(paths.log_file(svc))}"
            )
        time.sleep(0.1)


def _health(plane: Plane, svc: str, timeout: float) -> str:
    """Ask ``svc``'s standard health service; "UNREACHABLE" when it does not answer."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _channel(plane, plane.endpoint(svc), "") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _last_line(path: Path) -> str:
    """The log's last non-empty line, as a second line of an error message."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    line = lines[-1]
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        record = json.loads(line)
        line = str(record.get("exc") or record.get("msg") or line).strip().splitlines()[-1]
    return f"\n  last log line: {line[:300]}"


# ---------------------------------------------------------------------------- stop


def _stop_locked(paths: Paths, plane: Plane, terminate_agents: bool = True) -> None:
    if terminate_agents and plane.pids.get("provisioner") and _alive(plane.pids["provisioner"], "provisioner"):
        # Ask the provisioner first: it owns the agents and records their termination.
        with contextlib.suppress(Exception):
            _terminate_instances(plane, plane.token or _ensure_token(paths))
    live = {svc: pid for svc, pid in plane.pids.items() if pid and _alive(pid, svc)}
    for pid in live.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _wait_gone(live, STOP_GRACE_S)
    # Agents (and the tasks they run) that the provisioner did not stop, e.g. because it
    # had crashed: find them by the plane's environment marker.
    if plane.plane_id:
        strays = {f"pid {pid}": pid for pid in _marked_processes(plane.plane_id)}
        for pid in strays.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _wait_gone(strays, STOP_GRACE_S)
    paths.plane_file.unlink(missing_ok=True)
    for svc in SERVICES:
        paths.ready_file(svc).unlink(missing_ok=True)


def _wait_gone(pids: dict[str, int], grace: float) -> None:
    """Wait for ``pids`` to exit; SIGKILL their process groups after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    remaining = dict(pids)
    while remaining and time.monotonic() < deadline:
        remaining = {k: p for k, p in remaining.items() if _alive(p)}
        if remaining:
            time.sleep(0.05)
    for pid in remaining.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while any(_alive(p) for p in remaining.values()) and time.monotonic() < end:
        time.sleep(0.05)


def _channel(plane: Plane, endpoint: str, token: str) -> grpc.Channel:
    """A channel to one of ``plane``'s services: TLS exactly when the plane serves it (a
    STYX_TLS_CA meant for some remote plane must not turn plaintext calls into TLS)."""
    from styx.common.clients import open_channel

    return open_channel(endpoint, token, tls_ca=plane.tls_ca, plaintext=not plane.tls)


def _terminate_instances(plane: Plane, token: str) -> None:
    """Terminate every live instance the provisioner owns and wait for the operations."""
    import grpc

    from styx.v1 import provisioner_pb2, provisioner_pb2_grpc

    deadline = time.monotonic() + TERMINATE_AGENTS_TIMEOUT_S
    done = (provisioner_pb2.OPERATION_STATE_DONE, provisioner_pb2.OPERATION_STATE_FAILED)
    with _channel(plane, plane.provisioner, token) as channel:
        stub = provisioner_pb2_grpc.ProvisionerStub(channel)
        instances = stub.ListInstances(provisioner_pb2.ListInstancesRequest(), timeout=5).instances
        ops = []
        for inst in instances:
            if inst.state == provisioner_pb2.INSTANCE_STATE_TERMINATED or not inst.node_id:
                continue
            op = stub.Terminate(
                provisioner_pb2.TerminateRequest(request_id=str(uuid.uuid4()), node_id=inst.node_id),
                timeout=5,
            )
            ops.append(op)
        pending = [op.operation_id for op in ops if op.state not in done]
        while pending and time.monotonic() < deadline:
            still = []
            for op_id in pending:
                try:
                    op = stub.GetOperation(provisioner_pb2.GetOperationRequest(operation_id=op_id), timeout=5)
                except grpc.RpcError:
                    continue
                if op.state not in done:
                    still.append(op_id)
            pending = still
            if pending:
                time.sleep(0.2)


def _marked_processes(plane_id: str) -> list[int]:
    """Pids of live processes whose environment carries this plane's marker (Linux /proc)."""
    marker = f"{PLANE_ID_ENV}={plane_id}".encode()
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------------------- helpers


def _home(home: Path | None) -> Path:
    if home is not None:
        return Path(home).expanduser().resolve()
    from styx.common.config import styx_home

    return styx_home().resolve()


def _read_plane(paths: Paths) -> Plane | None:
    try:
        data = json.loads(paths.plane_file.read_text())
        token = paths.token_file.read_text().strip() if paths.token_file.exists() else ""
        return Plane(
            home=paths.home,
            scheduler=str(data["scheduler"]),
            broker=str(data["broker"]),
            provisioner=str(data["provisioner"]),
            pids={str(k): int(v) for k, v in dict(data.get("pids") or {}).items()},
            plane_id=str(data.get("plane_id", "")),
            started_at=float(data.get("started_at", 0.0)),
            ready=bool(data.get("ready", False)),
            token=token,
            tls=bool(data.get("tls", False)),
            tls_ca=str(data.get("tls_ca", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # A corrupt record (half-written by a crashed run) counts as no plane; start() rewrites it.
        return None


def _write_plane(paths: Paths, plane: Plane) -> None:
    tmp = paths.plane_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(plane.to_json(), indent=2) + "\n")
    tmp.replace(paths.plane_file)


def _ensure_token(paths: Paths) -> str:
    paths.local.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(paths.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = paths.token_file.read_text().strip()
        if token:
            return token
        fd = os.open(paths.token_file, os.O_WRONLY | os.O_TRUNC, 0o600)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def _port_free(endpoint: str) -> bool:
    """True when nothing listens on ``endpoint`` (host:port), so a service can bind it."""
    host, _, port = endpoint.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as gRPC binds: a port left in TIME_WAIT by the dead service is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or HOST, int(port)))
        except (OSError, ValueError):
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports; the sockets stay open until all are picked."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _alive(pid: int, service: str = "") -> bool:
    """True when ``pid`` runs (not a zombie) and, if ``service`` is given, is that service.

    The command-line check guards against a recycled pid in a stale plane.json.
    """
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap our own exited children, which would otherwise linger as zombies and look alive.
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return not service  # someone else's process: never one of ours
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True  # no /proc (macOS): trust the signal check
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        if service:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            return f"styx.{service}".encode() in cmdline or f"styx-{service}".encode() in cmdline
    except (OSError, IndexError):
        return False
    return True


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    """Hold an exclusive flock on plane.lock; waits for another `sky` that holds it.

    Everything the plane's files get written under here is private to the user (umask
    0077 while the lock is held: plane.json, logs, state; the services inherit it)."""
    previous = os.umask(0o077)
    try:
        with _flocked(paths):
            yield
    finally:
        os.umask(previous)


@contextlib.contextmanager
def _flocked(paths: Paths) -> Iterator[None]:
    paths.local.mkdir(parents=True, exist_ok=True)
    paths.local.chmod(0o700)
    with open(paths.lock_file, "a+") as fh:
        os.fchmod(fh.fileno(), 0o600)
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() > deadline:
                    raise PlaneError(
                        f"another sky process holds {paths.lock_file} for over {LOCK_TIMEOUT_S:.0f}s"
                    ) from exc
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
