"""The local provider: nodes are agent processes on this machine.

It offers ONE "host" offer (provider=local, region=local, instance_type=host) with the
host's CPUs, memory and GPUs at price 0. ``create`` starts ``python -m styx.agent`` as a
detached process (its own session, so it outlives the provisioner and its process group
can be killed as a whole); the instance id is ``pid-<pid>``. A small record per node under
``$STYX_HOME/local/instances`` lets a restarted provisioner find (and terminate) agents
started by an earlier one.

Environment:
- ``STYX_LOCAL_MAX_NODES``: most local nodes at once (default 1).
- ``STYX_LOCAL_NODE_CPUS`` / ``STYX_LOCAL_NODE_MEMORY_GIB``: advertise this capacity
  instead of the host's and pass it to agents as ``--cpus`` / ``--memory-gib``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from styx.agent import hardware
from styx.agent.procgroup import stop_process_group
from styx.agent.reaper import reap_leftovers
from styx.common.config import CREDENTIAL_ENV, TOKEN_STDIN_ENV
from styx.provider import ProviderError, ProviderErrorKind, ProviderStatus
from styx.provider.base import ProviderBase
from styx.provider.capabilities import Capabilities
from styx.provider.config import ConfigError, ProviderConfig
from styx.provider.hooks import hookimpl
from styx.provider.types import CreateRequest, InstanceStatus, Offer, ProviderInstance

log = logging.getLogger(__name__)

NAME = "local"
REGION = "local"
INSTANCE_TYPE = "host"
# Seconds an agent gets to stop its tasks after SIGTERM before its group is killed.
TERMINATE_GRACE_S = 10.0


def _home() -> Path:
    return Path(os.environ.get("STYX_HOME") or Path.home() / ".styx").expanduser()


def _size(name: str) -> float | None:
    """STYX_LOCAL_NODE_CPUS / _MEMORY_GIB: a positive number, None when unset."""
    config = ProviderConfig.load("STYX_LOCAL_")
    return config.number(name, 0.0, positive=True) if config.is_set(name) else None


class _Record(TypedDict):
    """What is kept per started agent under $STYX_HOME/local/instances/<node_id>.json."""

    node_id: str
    pid: int
    instance_id: str
    request_id: str
    created_at: float
    log: str
    # The control plane that started the agent (its plane id), for the reconcile loop.
    plane: NotRequired[str]


class LocalProvider(ProviderBase):
    """Runs each node as an agent process on this machine. Thread-safe."""

    name = NAME
    capabilities = Capabilities(multi_node=True)

    def __init__(self, home: Path | None = None) -> None:
        super().__init__()
        self._home = home
        self._lock = threading.Lock()
        # Popen handles of agents this process started, so exited ones get reaped (a
        # zombie would otherwise still look alive to kill(pid, 0)).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._offer: Offer | None = None

    # -- paths -------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        """The Styx home this provider keeps its records and agent logs under."""
        return self._home or _home()

    def _records_dir(self) -> Path:
        return self.home / "local" / "instances"

    def _record_path(self, node_id: str) -> Path:
        return self._records_dir() / f"{node_id}.json"

    def _agent_dir(self, node_id: str) -> Path:
        # The agent's default --work-dir under the STYX_HOME it is started with.
        return self.home / "agents" / node_id

    def log_path(self, node_id: str) -> Path:
        """Where the agent of ``node_id`` writes its output."""
        return self.home / "local" / "logs" / f"agent-{node_id}.log"

    # -- Provider interface --------------------------------------------------------------

    def check(self) -> ProviderStatus:
        """Enabled unless a STYX_LOCAL_* setting is malformed: this machine is here."""
        try:
            _size("STYX_LOCAL_NODE_CPUS"), _size("STYX_LOCAL_NODE_MEMORY_GIB"), _max_nodes()
        except ConfigError as exc:
            return ProviderStatus(False, exc.reason, exc.hint)
        return ProviderStatus(enabled=True)

    def offers(self) -> list[Offer]:
        """The single host offer (detected once; hardware does not change under us)."""
        with self._lock:
            if self._offer is None:
                self._offer = self._detect_offer()
            return [self._offer]

    def _detect_offer(self) -> Offer:
        try:
            cpus = _size("STYX_LOCAL_NODE_CPUS") or hardware.detect_cpus()
            memory = _size("STYX_LOCAL_NODE_MEMORY_GIB") or round(hardware.detect_memory_gib(), 2)
            max_nodes = _max_nodes()
        except ConfigError as exc:
            raise ProviderError(ProviderErrorKind.INVALID, f"{exc.reason} ({exc.hint})") from None
        gpus = hardware.detect_gpus()
        accel: dict[str, Any] = {}
        if gpus:
            # A host with mixed GPUs advertises its most common kind; the agent still
            # registers every device with its index, which is what placement uses.
            name, count = Counter(g.name for g in gpus).most_common(1)[0]
            memory_each = max(g.memory_gib for g in gpus if g.name == name)
            accel = {"accelerator_name": name, "accelerator_count": count, "accelerator_memory_gib": memory_each}
        # Price 0 (the Offer default): this machine is already paid for.
        arch = platform.machine()
        return Offer(NAME, REGION, "", INSTANCE_TYPE, cpus, memory, arch=arch, max_instances=max_nodes, **accel)

    def create_instance(self, request: CreateRequest) -> str:
        """Start an agent process for the node; a live one already started for it is reused."""
        offer, node_id = request.offer, request.node_id
        if offer.instance_type != INSTANCE_TYPE:
            raise ProviderError(ProviderErrorKind.INVALID, f"local provider has only instance type {INSTANCE_TYPE!r}")
        with self._lock:
            existing = self._read_record(node_id)
            if existing is not None and self._alive(existing["pid"], node_id):
                # A retried create (same request after a restart) must not start a second agent.
                return str(existing["instance_id"])
            return self._spawn(request)

    def _spawn(self, request: CreateRequest) -> str:
        node_id, labels, launch = request.node_id, request.labels, request.agent_launch
        argv = [
            sys.executable, "-m", "styx.agent",
            "--node-id", node_id,
            "--provider", NAME,
            "--region", REGION,
            "--instance-type", INSTANCE_TYPE,
        ]  # fmt: skip
        if launch.scheduler_endpoint:
            argv += ["--scheduler", launch.scheduler_endpoint]
        if launch.broker_endpoint:
            argv += ["--broker", launch.broker_endpoint]
        cpus = _size("STYX_LOCAL_NODE_CPUS")
        memory = _size("STYX_LOCAL_NODE_MEMORY_GIB")
        if cpus:
            argv += ["--cpus", repr(cpus)]
        if memory:
            argv += ["--memory-gib", repr(memory)]
        for key, value in sorted(labels.items()):
            argv += ["--label", f"{key}={value}"]
        env = dict(os.environ)
        for name in CREDENTIAL_ENV:
            env.pop(name, None)
        # The agent gets a token for its own node only (the agents' RPCs, naming this node),
        # on its stdin: not on argv (other users read command lines) and not in its
        # environment (its tasks, same user, read /proc/<agent>/environ).
        env[TOKEN_STDIN_ENV] = "1"
        env["STYX_HOME"] = str(self.home)
        log_path = self.log_path(node_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(self.home),
                    start_new_session=True,  # own session: survives us, killable as a group
                    close_fds=True,
                )
        except OSError as exc:
            raise ProviderError(ProviderErrorKind.INTERNAL, f"could not start the agent: {exc}") from exc
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(launch.node_token(node_id).encode() + b"\n")
        proc.stdin.close()
        self._children[proc.pid] = proc
        instance_id = f"pid-{proc.pid}"
        self._write_record(
            node_id,
            {
                "node_id": node_id,
                "pid": proc.pid,
                "instance_id": instance_id,
                "request_id": request.request_id,
                "plane": request.plane_id,
                "created_at": time.time(),
                "log": str(log_path),
            },
        )
        log.info("started agent", extra={"node_id": node_id, "pid": proc.pid, "agent_log": str(log_path)})
        return instance_id

    def terminate(self, instance_id: str) -> None:
        """SIGTERM the agent's process group, SIGKILL it after a grace period; gone is fine."""
        pid = _pid_of(instance_id)
        with self._lock:
            record = next((r for r in self._records() if r["pid"] == pid), None)
        node_id = record["node_id"] if record else None
        # Only signal a process we can confirm is our agent: the pid may have been reused.
        if record is not None and self._alive(pid, node_id):
            self._kill_group(pid)
        if record is not None:
            reap_leftovers(self._agent_dir(record["node_id"]))
            with self._lock:
                self._record_path(record["node_id"]).unlink(missing_ok=True)
        with self._lock:
            proc = self._children.pop(pid, None)
        if proc is not None:
            proc.poll()

    def list_instances(self) -> list[ProviderInstance]:
        """Agents with a record whose process is alive; records of dead ones are pruned."""
        out: list[ProviderInstance] = []
        with self._lock:
            for record in self._records():
                node_id = record["node_id"]
                if self._alive(record["pid"], node_id):
                    out.append(
                        ProviderInstance(
                            record["instance_id"], node_id, InstanceStatus.RUNNING, str(record.get("plane", ""))
                        )
                    )
                else:
                    # Before the record (and then the node) is dropped: its tasks must not
                    # run on while the scheduler re-queues them elsewhere.
                    reap_leftovers(self._agent_dir(node_id))
                    self._record_path(node_id).unlink(missing_ok=True)
                    self._children.pop(record["pid"], None)
        return out

    # -- processes -----------------------------------------------------------------------

    def _alive(self, pid: int, node_id: str | None) -> bool:
        proc = self._children.get(pid)
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # not ours, so not our agent
        cmdline = _cmdline(pid)
        if cmdline is None:
            return True  # no /proc (macOS): the pid exists, trust the record
        if _proc_state(pid) == "Z":
            return False
        return b"styx.agent" in cmdline and (node_id is None or node_id.encode() in cmdline.split(b"\0"))

    def _kill_group(self, pid: int) -> None:
        stop_process_group(pid, self._children.get(pid), TERMINATE_GRACE_S)

    # -- records -------------------------------------------------------------------------

    def _read_record(self, node_id: str) -> _Record | None:
        path = self._record_path(node_id)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cast(_Record, record) if _is_record(record) else None

    def _records(self) -> list[_Record]:
        records: list[_Record] = []
        directory = self._records_dir()
        if not directory.is_dir():
            return []
        for path in sorted(directory.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _is_record(record):
                records.append(cast(_Record, record))
        return records

    def _write_record(self, node_id: str, record: _Record) -> None:
        path = self._record_path(node_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)


def _is_record(data: object) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("pid"), int)
        and isinstance(data.get("node_id"), str)
        and isinstance(data.get("instance_id"), str)
    )


def _pid_of(instance_id: str) -> int:
    prefix, _, number = instance_id.partition("-")
    if prefix != "pid" or not number.isdigit():
        raise ProviderError(ProviderErrorKind.INVALID, f"{instance_id!r} is not a local instance id (pid-<n>)")
    return int(number)


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return b"" if os.path.isdir("/proc/self") else None
    except OSError:
        return None


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # The command name in parentheses may contain spaces; the state follows the last ')'.
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _max_nodes() -> int:
    """STYX_LOCAL_MAX_NODES: most local nodes at once (default 1)."""
    return ProviderConfig.load("STYX_LOCAL_").integer("STYX_LOCAL_MAX_NODES", 1)


@hookimpl
def styx_provider() -> LocalProvider:
    """Contribute the local provider."""
    return LocalProvider()
