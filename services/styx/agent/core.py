"""The agent: register the node, heartbeat, take work from the stream, run it.

Threads: one main loop (register, then follow the work stream), one heartbeat loop, and
one thread per task attempt (``runner.TaskRun``). Assignments are deduplicated on
(task_id, attempt), since the scheduler re-sends unfinished work on every reconnect.

Self-fencing: the broker marks a node LOST once it has not heard from it for its lease,
and the scheduler re-queues a LOST node's tasks ``--node-fence-seconds`` (lease plus a
margin) after the last heartbeat. So an agent that could not renew its lease for a whole
lease kills its tasks itself before that moment (and runs nothing new until it renews):
a partitioned node never runs a task at the same time as its re-queued attempt. It does
the same at once when the broker no longer knows the node (deregistered: GONE). Renewals
refused because no broker listens (connection refused: it crashed) do not count: no broker
is there to mark the node LOST, and a restarted one gives every node a fresh lease, so a
`sky local up` long after a broker crash still finds the tasks running.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from styx.agent import hardware
from styx.agent.hardware import HostCapacity
from styx.agent.reaper import reap_leftovers
from styx.agent.runner import AppendLogs, Assignment, Cancellation, RunState, StatusReport, TaskRun
from styx.agent.watcher import TaskWatcher
from styx.common.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

# The agent must be gone within 2 s of SIGTERM, tasks stopped and reported.
STOP_DEADLINE_S = 1.8
HEARTBEAT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class AgentConfig:
    """What the agent is and where it keeps its files."""

    node_id: str
    work_dir: Path
    provider: str = "local"
    instance_id: str = ""
    region: str = ""
    zone: str = ""
    instance_type: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_gib: float | None = None
    heartbeat_s: float = 2.0
    # The broker's lease until its first heartbeat reply says otherwise (its default).
    lease_s: float = 15.0
    # Where other nodes reach this one (STYX_NODE_IPS of multi-node tasks).
    address: str = ""


@dataclass(frozen=True)
class NodeRegistration:
    """What the agent registers about its node."""

    node_id: str
    provider: str
    instance_id: str
    capacity: HostCapacity
    region: str = ""
    zone: str = ""
    instance_type: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    address: str = ""


class BrokerDown(Exception):
    """A heartbeat found nothing listening at the broker's address (connection refused)."""


@dataclass(frozen=True)
class Renewal:
    """A heartbeat's answer: does the broker know the node, and its lease in seconds (0: unsaid)."""

    known: bool
    lease_s: float = 0.0


class ControlPlaneLike(Protocol):
    """What the agent needs from the control plane (``client.ControlPlane`` in production)."""

    def register(self, node: NodeRegistration) -> None:
        """Register the node (retrying until answered)."""

    def heartbeat(self, node_id: str, timeout_s: float) -> Renewal:
        """Renew the lease; ``known`` is False when the broker does not know the node."""
        ...

    def deregister(self, node_id: str, reason: str, timeout_s: float) -> None:
        """Tell the broker the node is going away (one try within ``timeout_s``)."""

    def report_status(self, node_id: str, report: StatusReport) -> None:
        """Report a task attempt's status."""

    def append_logs(self, node_id: str, task_id: str, attempt: int, offset: int, data: bytes, rank: int = 0) -> int:
        """Append log bytes (of one rank of a multi-node task) as ``node_id``; return the next offset."""
        ...

    def get_workdir(self, node_id: str, job_id: str) -> bytes:
        """The job's workdir archive (gzip-compressed tar), fetched as ``node_id``."""
        ...

    def work_items(self, node_id: str) -> Iterable[Assignment | Cancellation]:
        """Iterate assignments and cancellations until stopped."""
        ...

    def cancel_stream(self) -> None:
        """Interrupt the work stream."""


def capacity(cfg: AgentConfig) -> HostCapacity:
    """Detected capacity, with ``--cpus`` / ``--memory-gib`` overrides applied."""
    gpus = tuple(hardware.detect_gpus())
    cpus = cfg.cpus if cfg.cpus else hardware.detect_cpus()
    memory = cfg.memory_gib if cfg.memory_gib else round(hardware.detect_memory_gib(), 2)
    return HostCapacity(cpus=cpus, memory_gib=memory, gpus=gpus)


class Agent:
    """Runs the node's side of the control plane until ``stop()``."""

    def __init__(
        self, cfg: AgentConfig, control: ControlPlaneLike, stop: threading.Event, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self._lease_s = cfg.lease_s
        self._renewed_at = clock.monotonic()
        # Why the node is fenced (its tasks killed, new ones refused); "" while its lease holds.
        self._fenced = ""
        # A renewal failed since the last success in a way a live broker could cause.
        self._maybe_partitioned = False
        self._control = control
        self._stop = stop
        self._runs: dict[tuple[str, int, int], TaskRun] = {}
        self._lock = threading.Lock()
        self._registration = NodeRegistration(
            node_id=cfg.node_id,
            provider=cfg.provider,
            instance_id=cfg.instance_id,
            capacity=capacity(cfg),
            region=cfg.region,
            zone=cfg.zone,
            instance_type=cfg.instance_type,
            labels=dict(cfg.labels),
            address=cfg.address,
        )
        self._threads: list[threading.Thread] = []
        # Kills this agent's tasks should it die; started with the first task.
        self._watcher = TaskWatcher()

    @property
    def registration(self) -> NodeRegistration:
        """What the agent registers (capacity included)."""
        return self._registration

    def start(self) -> None:
        """Kill what an earlier agent of this node left running, then start the main and
        heartbeat threads."""
        reap_leftovers(self.cfg.work_dir)
        main = threading.Thread(target=self._main, name="agent-main", daemon=True)
        self._threads.append(main)
        main.start()

    def stop(self, deadline_s: float = STOP_DEADLINE_S) -> None:
        """Stop taking work, stop every running task's process group (SIGTERM, SIGKILL after
        runner.SHUTDOWN_GRACE_S), report them FAILED and deregister, all within ``deadline_s``.

        What misses the deadline is safe to leave: a report not delivered is re-sent by
        the scheduler's outstanding work to the next agent, which answers from the state
        file; a missed deregistration only means the node is re-queued after the fence.
        """
        started = self._clock.monotonic()

        def left() -> float:
            return max(0.0, deadline_s - (self._clock.monotonic() - started))

        self._stop.set()
        self._control.cancel_stream()
        with self._lock:
            runs = [r for r in self._runs.values() if not r.done]
        stoppers = [threading.Thread(target=r.shutdown, daemon=True) for r in runs]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(left())
        for r in runs:
            r.join(left())
        for t in self._threads:
            t.join(left())
        self._watcher.close(left())  # kills any task group that outlived the deadline
        try:
            # Without this the broker would keep placing work here until the lease ran out.
            self._control.deregister(self.cfg.node_id, "agent stopped", max(left(), 0.2))
        except Exception as exc:
            log.warning("could not deregister the node; the broker will notice when its lease ends: %s", exc)

    # -- loops -----------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._register()
            if self._stop.is_set():
                return
            beat = threading.Thread(target=self._heartbeat_loop, name="agent-heartbeat", daemon=True)
            self._threads.append(beat)
            beat.start()
            for item in self._control.work_items(self.cfg.node_id):
                self.handle(item)
        except Exception as exc:
            if not self._stop.is_set():
                log.error("agent main loop failed", exc_info=exc)

    def _register(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            sent = self._clock.monotonic()
            try:
                self._control.register(self._registration)
            except Exception as exc:
                if self._stop.is_set():
                    return
                # Wrong token or a broker that refuses: keep trying, an operator may fix it.
                log.error("registration refused: %s; retrying in %.0fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self._renewed_at = sent  # registering grants a fresh lease
            log.info(
                "registered",
                extra={
                    "node_id": self.cfg.node_id,
                    "cpus": self._registration.capacity.cpus,
                    "memory_gib": self._registration.capacity.memory_gib,
                    "gpus": len(self._registration.capacity.gpus),
                },
            )
            return

    def _heartbeat_loop(self) -> None:
        while True:
            deadline = self._renewed_at + self._lease_s
            left = deadline - self._clock.monotonic()
            if left > 0:
                wait = min(self.cfg.heartbeat_s, left)
            else:  # past the deadline: fence now if due, else beat at the normal pace
                wait = 0.0 if self._maybe_partitioned and not self._fenced else self.cfg.heartbeat_s
            if self._clock.wait(self._stop, wait):
                return
            sent = self._clock.monotonic()
            if sent >= deadline and self._maybe_partitioned:
                self.fence(f"no lease renewal for {self._lease_s:g} s")
            # A slow broker that answers within the lease still renews it, but the call must
            # not outlast the lease: the fence check comes right after it.
            timeout = min(max(self.cfg.heartbeat_s, deadline - sent), HEARTBEAT_TIMEOUT_S)
            try:
                renewal = self._control.heartbeat(self.cfg.node_id, timeout)
            except BrokerDown as exc:
                # Nothing listens at the broker's address: no broker runs to mark this node
                # LOST, and a restarted one gives every node a fresh lease. Tasks keep running.
                log.info("heartbeat failed, the broker is down: %s", exc)
                continue
            except Exception as exc:
                self._maybe_partitioned = True  # a broker may be up and about to mark us LOST
                log.info("heartbeat failed: %s", exc)
                continue
            self._maybe_partitioned = False
            if not renewal.known:
                self.fence("the broker no longer knows this node")
                log.info("broker does not know this node; registering again")
                self._register()
            else:
                self._renewed_at = sent  # the lease runs from when the renewal was sent, not answered
            if renewal.lease_s > 0:
                self._lease_s = renewal.lease_s
            if self._fenced:
                log.warning("lease renewed; the node takes work again", extra={"node_id": self.cfg.node_id})
                self._fenced = ""

    def fence(self, why: str) -> None:
        """Kill every running task now and refuse new ones until the lease is renewed."""
        with self._lock:
            first = not self._fenced
            self._fenced = why
            runs = [r for r in self._runs.values() if not r.done]
        if first:
            log.warning("node fenced: killing its tasks", extra={"reason": why, "tasks": len(runs)})
        for run in runs:
            run.fence(f"node fenced: {why}")

    # -- work ------------------------------------------------------------------------------------

    def handle(self, item: Assignment | Cancellation) -> None:
        """Apply one work item: start, dedupe, supersede or cancel an attempt."""
        if isinstance(item, Assignment):
            self._assign(item)
        else:
            self._cancel(item)

    def _assign(self, a: Assignment) -> None:
        with self._lock:
            existing = self._runs.get(a.key)
            fenced = self._fenced
            if existing is None and fenced:
                # Its lease may be over: the task may already run elsewhere. Refuse, so the
                # scheduler's retry policy decides (the node takes work again once renewed).
                report = StatusReport(a.task_id, a.attempt, RunState.FAILED, None, f"node fenced: {fenced}", a.rank)
                self._background(lambda: self._report(report))
                return
            if existing is None:
                older = [
                    r
                    for (task, attempt, _), r in self._runs.items()
                    if task == a.task_id and attempt < a.attempt and not r.done
                ]
                run = TaskRun(
                    a,
                    self.cfg.node_id,
                    self.cfg.work_dir,
                    self._appender(a),
                    self._report,
                    functools.partial(self._control.get_workdir, self.cfg.node_id),
                    address=self.cfg.address,
                    watcher=self._watcher,
                )
                self._runs[a.key] = run
        if existing is not None:
            if existing.done:
                self._resend_final(existing)  # the scheduler missed our report: send it again
            return
        for r in older:
            r.cancel(f"superseded by attempt {a.attempt}")
        log.info("task assigned", extra={"task_id": a.task_id, "attempt": a.attempt})
        run.start()

    def _cancel(self, c: Cancellation) -> None:
        with self._lock:
            run = self._runs.get(c.key)
        if run is None:
            # Not running here (e.g. this agent restarted): confirm so the task can settle.
            report = StatusReport(c.task_id, c.attempt, RunState.CANCELLED, None, c.reason or "cancelled", c.rank)
            self._background(lambda: self._report(report))
        elif run.done:
            self._resend_final(run)
        else:
            log.info("cancelling task", extra={"task_id": c.task_id, "attempt": c.attempt, "reason": c.reason})
            run.cancel(c.reason)

    def _resend_final(self, run: TaskRun) -> None:
        final = run.final
        if final is not None:
            self._background(lambda: self._report(final))

    def _background(self, fn: Callable[[], None]) -> None:
        def target() -> None:
            try:
                fn()
            except Exception as exc:
                log.warning("status report failed: %s", exc)

        threading.Thread(target=target, daemon=True).start()

    def _appender(self, a: Assignment) -> AppendLogs:
        def append(offset: int, data: bytes) -> int:
            return self._control.append_logs(self.cfg.node_id, a.task_id, a.attempt, offset, data, a.rank)

        return append

    def _report(self, report: StatusReport) -> None:
        log.info(
            "task status",
            extra={
                "task_id": report.task_id,
                "attempt": report.attempt,
                "state": report.state.value,
                "exit_code": report.exit_code,
                "detail": report.message,
            },
        )
        self._control.report_status(self.cfg.node_id, report)
