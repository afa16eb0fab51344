"""Running one task attempt: processes, its log file, shipping the log, the final status.

Plain Python (no grpc): the agent core hands a ``TaskRun`` two callbacks, one that appends
log bytes at an offset and one that reports a status, and the run does the rest:

- the job's workdir archive (when it has one) is fetched and unpacked into the sandbox;
- setup then run, each as ``["bash", "-c", script]`` (the script is ONE argv item, never
  pasted into a shell line), in a new session so the whole process group can be stopped,
  and registered with the agent's task watcher (``watcher.py``) so it dies with the agent;
- stdout and stderr of both go to one log file per attempt, which a shipper thread tails
  and sends in chunks of at most 64 KiB until the processes exited and all is sent;
- RUNNING is reported right after the first spawn, then SUCCEEDED / FAILED / CANCELLED
  once the log is shipped (so a client that sees the end state can read the whole log).

A small state file per attempt records the process group and the outcome, so that an agent
restarted while the scheduler re-sends the assignment neither runs the attempt twice nor
leaves its processes behind.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from styx.agent.procgroup import group_alive, stop_process_group
from styx.agent.taskio import AppendLogs, LogShipper, WorkdirError, task_env, unpack_workdir
from styx.agent.watcher import TaskWatcher

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0
# Grace after SIGTERM when the agent itself stops: it must be gone within 2 s of its SIGTERM.
SHUTDOWN_GRACE_S = 1.0
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunState(enum.Enum):
    """States an agent reports; the names match ``styx.v1.TaskState`` without its prefix."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Assignment:
    """A task attempt to run (from ``styx.v1.Assignment``)."""

    task_id: str
    attempt: int
    run: str
    job_id: str = ""
    setup: str = ""
    envs: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    gpu_indices: tuple[int, ...] = ()
    has_workdir: bool = False
    timeout_s: float = 0.0
    # Multi-node tasks: this node's rank, the node count and every rank's address in order.
    rank: int = 0
    num_nodes: int = 1
    node_addresses: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, int, int]:
        """Identity of the attempt on this node: (task_id, attempt, rank)."""
        return (self.task_id, self.attempt, self.rank)


@dataclass(frozen=True)
class Cancellation:
    """Stop a task attempt (from ``styx.v1.Cancellation``)."""

    task_id: str
    attempt: int
    reason: str = ""
    rank: int = 0

    @property
    def key(self) -> tuple[str, int, int]:
        """Identity of the attempt on this node: (task_id, attempt, rank)."""
        return (self.task_id, self.attempt, self.rank)


@dataclass(frozen=True)
class StatusReport:
    """A status report about one attempt."""

    task_id: str
    attempt: int
    state: RunState
    exit_code: int | None = None
    message: str = ""
    rank: int = 0

    @property
    def request_id(self) -> str:
        """Idempotency key: the same report sent twice is applied once."""
        suffix = f"/{self.rank}" if self.rank else ""
        return f"{self.task_id}/{self.attempt}/{self.state.value}{suffix}"


Report = Callable[[StatusReport], None]
"""Send a status report (retrying as the transport sees fit)."""

FetchWorkdir = Callable[[str], bytes]
"""``fetch(job_id) -> archive``: the job's workdir as a gzip-compressed tar."""


class TaskRun:
    """One attempt of one task on this node. ``start()`` runs it in its own thread."""

    def __init__(
        self,
        assignment: Assignment,
        node_id: str,
        work_dir: Path,
        append: AppendLogs,
        report: Report,
        fetch_workdir: FetchWorkdir | None = None,
        address: str = "",
        *,
        watcher: TaskWatcher,
    ) -> None:
        self.assignment = assignment
        self._watcher = watcher
        self._node_id = node_id
        self._address = address
        self._append = append
        self._report = report
        self._fetch_workdir = fetch_workdir
        name = f"{assignment.task_id}-{assignment.attempt}"
        if assignment.rank:
            name += f"-r{assignment.rank}"
        self.sandbox = work_dir / "tasks" / name
        self.log_path = work_dir / "logs" / f"{name}.log"
        self._state_path = work_dir / "state" / f"{name}.json"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._cancel_reason: str | None = None
        self._shutdown = False
        self._fence_reason = ""
        self.final: StatusReport | None = None
        self._thread = threading.Thread(target=self._main, name=f"task-{name}", daemon=True)

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        """Run the attempt in a background thread."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the attempt's thread to finish."""
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        """True once the final status is known."""
        return self.final is not None

    def cancel(self, reason: str) -> None:
        """Stop the attempt's process group (SIGTERM, SIGKILL after the grace) -> CANCELLED."""
        with self._lock:
            if self._cancel_reason is None:
                self._cancel_reason = reason or "cancelled"
            proc = self._proc
        if proc is not None:
            # Stopping may take the whole grace period: do it off the caller's thread.
            threading.Thread(target=stop_process_group, args=(proc.pid, proc, CANCEL_GRACE_S), daemon=True).start()

    def shutdown(self) -> None:
        """The agent is stopping: kill the group now and report FAILED (the node goes away)."""
        with self._lock:
            self._shutdown = True
            if self._cancel_reason is None:
                self._cancel_reason = "agent stopped"
            proc = self._proc
        if proc is not None:
            stop_process_group(proc.pid, proc, SHUTDOWN_GRACE_S)

    def fence(self, reason: str) -> None:
        """The node lost its lease: SIGKILL the group at once and report FAILED with ``reason``
        (its re-queued attempt may start elsewhere any moment)."""
        with self._lock:
            self._shutdown = True
            self._fence_reason = reason
            if self._cancel_reason is None:
                self._cancel_reason = reason
            proc = self._proc
        if proc is not None:
            stop_process_group(proc.pid, proc, 0.0)

    def _stop_grace(self) -> float:
        with self._lock:
            return SHUTDOWN_GRACE_S if self._shutdown else CANCEL_GRACE_S

    # -- the attempt -------------------------------------------------------------------------

    def _main(self) -> None:
        a = self.assignment
        try:
            report = self._execute()
        except Exception as exc:
            log.error("task attempt crashed in the agent", exc_info=exc, extra={"task_id": a.task_id})
            report = self._status(RunState.FAILED, None, "the agent failed to run the task")
        self._finish(report)

    def _execute(self) -> StatusReport:
        a = self.assignment
        if not _SAFE_ID.match(a.task_id):
            return self._status(RunState.FAILED, None, f"task id {a.task_id!r} is not a safe file name")
        previous = self._read_state()
        if previous is not None:
            return self._resume(previous)
        for path in (self.sandbox, self.log_path.parent, self._state_path.parent):
            path.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        self._write_state({"phase": "starting"})
        if a.has_workdir:
            try:
                if self._fetch_workdir is None:
                    raise WorkdirError("this agent cannot fetch workdir archives")
                unpack_workdir(self._fetch_workdir(a.job_id), self.sandbox)
            except WorkdirError as exc:
                return self._status(RunState.FAILED, None, str(exc))
            except Exception as exc:
                log.warning("workdir of job %s not fetched: %s", a.job_id, exc)
                return self._status(RunState.FAILED, None, f"workdir of job {a.job_id} could not be fetched: {exc}")
        cwd = Path(a.workdir).expanduser() if a.workdir else self.sandbox
        if not cwd.is_dir():
            return self._status(RunState.FAILED, None, f"workdir {a.workdir!r} does not exist on node {self._node_id}")
        env = task_env(a, self._node_id, address=self._address)
        shipper = LogShipper(self.log_path, self._append, name=f"ship-{a.task_id}-{a.attempt}")
        shipper.start()
        try:
            return self._run_phases(cwd, env)
        finally:
            shipper.finish()
            shipper.join()

    def _run_phases(self, cwd: Path, env: dict[str, str]) -> StatusReport:
        a = self.assignment
        reported_running = False
        # timeout_s bounds setup and run together, from the first spawn: a hung setup counts.
        deadline = None
        with open(self.log_path, "ab", buffering=0) as out:
            for phase, script in (("setup", a.setup), ("run", a.run)):
                if not script.strip():
                    continue
                with self._lock:
                    if self._cancel_reason is not None:
                        return self._stopped()
                    proc = self._watcher.spawn(
                        script, a.task_id, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT,
                    )  # fmt: skip
                    self._proc = proc
                try:
                    self._write_state({"phase": phase, "pgid": proc.pid, "task_id": a.task_id})
                    if not reported_running:
                        reported_running = True
                        self._report_running()
                    if deadline is None and a.timeout_s > 0:
                        deadline = time.monotonic() + a.timeout_s
                    ended = self._wait_phase(phase, proc, deadline)
                finally:
                    # The group is stopped by now (or, on an agent crash, the watcher's job).
                    self._watcher.release(proc.pid)
                if ended is not None:
                    return ended
        if not reported_running:
            self._report_running()
        return self._status(RunState.SUCCEEDED, 0, "")

    def _wait_phase(self, phase: str, proc: subprocess.Popen[bytes], deadline: float | None) -> StatusReport | None:
        """Wait for one phase's process; the attempt's final report, or None to go on."""
        try:
            code = proc.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            stop_process_group(proc.pid, proc, CANCEL_GRACE_S)
            with self._lock:
                self._proc = None
                cancelled = self._cancel_reason is not None
            if cancelled:
                return self._stopped()
            return self._status(RunState.FAILED, None, f"{phase} timed out after {self.assignment.timeout_s:g} s")
        # Background children of a finished script would outlive the task: stop them
        # (also the cancel path: what ignored SIGTERM is killed after the same grace).
        stop_process_group(proc.pid, proc, self._stop_grace())
        with self._lock:
            self._proc = None
            cancelled = self._cancel_reason is not None
        if cancelled:
            return self._stopped()
        if code < 0:
            # Exit 128+N, as shells report a child killed by signal N (README's promise).
            return self._status(
                RunState.FAILED, 128 - code, f"{phase} killed by signal {-code} ({_signal_name(-code)})"
            )
        if code != 0:
            return self._status(RunState.FAILED, code, f"{phase} exited with {code}")
        return None

    def _report_running(self) -> None:
        # A lost RUNNING report must not stop the task: the final report still settles it.
        try:
            self._report(self._status(RunState.RUNNING))
        except Exception as exc:
            log.warning("RUNNING status of %s not delivered: %s", self.assignment.task_id, exc)

    def _stopped(self) -> StatusReport:
        with self._lock:
            reason, shutdown, fenced = self._cancel_reason or "cancelled", self._shutdown, self._fence_reason
        if fenced:
            return self._status(RunState.FAILED, None, fenced)
        if shutdown:
            return self._status(RunState.FAILED, None, "the node's agent stopped while the task ran")
        return self._status(RunState.CANCELLED, None, reason)

    def _resume(self, previous: dict[str, object]) -> StatusReport:
        """The attempt was started by an earlier agent process on this node."""
        final = previous.get("final")
        if isinstance(final, dict):
            report = StatusReport(
                self.assignment.task_id,
                self.assignment.attempt,
                RunState(final["state"]),
                final.get("exit_code"),
                str(final.get("message", "")),
                self.assignment.rank,
            )
        else:
            # Its processes are not our children: we cannot learn their exit status, so stop
            # them and let the scheduler's retry policy decide (never run the attempt twice).
            pgid = previous.get("pgid")
            if isinstance(pgid, int) and group_alive(pgid):
                stop_process_group(pgid, None, CANCEL_GRACE_S)
            report = self._status(RunState.FAILED, None, "the agent restarted while the task ran")
        if self.log_path.exists():
            shipper = LogShipper(self.log_path, self._append, name=f"ship-{self.assignment.task_id}")
            shipper.finish()
            shipper.run()  # everything is written already: ship it on this thread
        return report

    def _finish(self, report: StatusReport) -> None:
        try:
            self._write_state(
                {"final": {"state": report.state.value, "exit_code": report.exit_code, "message": report.message}}
            )
        except OSError as exc:
            log.warning("could not record the outcome of %s: %s", report.task_id, exc)
        self.final = report
        try:
            self._report(report)
        except Exception as exc:
            log.warning("final status of %s/%d not delivered: %s", report.task_id, report.attempt, exc)

    def _status(self, state: RunState, exit_code: int | None = None, message: str = "") -> StatusReport:
        a = self.assignment
        return StatusReport(a.task_id, a.attempt, state, exit_code, message, a.rank)

    def _read_state(self) -> dict[str, object] | None:
        try:
            data = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_state(self, data: dict[str, object]) -> None:
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self._state_path)


def _signal_name(number: int) -> str:
    """SIGKILL for 9; "signal N" for numbers this platform does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
