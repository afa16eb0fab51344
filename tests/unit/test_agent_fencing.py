"""The agent's lease keeping, driven by a FakeClock (no processes, no sockets): when it
fences itself (kills its tasks, refuses new ones) and when it must not."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import wait_until
from styx.agent.core import Agent, AgentConfig, BrokerDown, NodeRegistration, Renewal
from styx.agent.runner import Assignment, Cancellation, RunState, StatusReport
from styx.common.clock import FakeClock


class Control:
    """A ControlPlaneLike whose heartbeat answers what the test says."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.last_ok = clock.monotonic()
        self.answer: Renewal | Exception = Renewal(True, 10.0)
        self.beats = 0
        self.registrations = 0
        self.reports: list[StatusReport] = []
        self.stop = threading.Event()

    def register(self, node: NodeRegistration) -> None:
        self.registrations += 1

    def heartbeat(self, node_id: str, timeout_s: float) -> Renewal:
        self.beats += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer.known:
            self.last_ok = self.clock.monotonic()
        return self.answer

    def deregister(self, node_id: str, reason: str, timeout_s: float) -> None:
        pass

    def report_status(self, node_id: str, report: StatusReport) -> None:
        self.reports.append(report)

    def append_logs(self, node_id: str, task_id: str, attempt: int, offset: int, data: bytes, rank: int = 0) -> int:
        return offset + len(data)

    def get_workdir(self, node_id: str, job_id: str) -> bytes:
        return b""

    def work_items(self, node_id: str) -> Iterator[Assignment | Cancellation]:
        self.stop.wait()
        return iter(())

    def cancel_stream(self) -> None:
        self.stop.set()


@pytest.fixture
def node(tmp_path: Path):
    clock, stop = FakeClock(), threading.Event()
    control = Control(clock)
    cfg = AgentConfig(node_id="n1", work_dir=tmp_path, cpus=1, memory_gib=1, heartbeat_s=1.0, lease_s=10.0)
    agent = Agent(cfg, control, stop, clock=clock)
    agent.start()
    wait_until(lambda: control.registrations == 1, timeout=5)
    yield agent, control, clock
    agent.stop()


def advance_until(clock: FakeClock, cond: Callable[[], object], max_s: float) -> float:
    """Step fake time by 0.1 s, giving the heartbeat loop a moment after each step, until
    ``cond`` holds or ``max_s`` passed; returns the fake seconds it took."""
    start = clock.monotonic()
    while not cond() and clock.monotonic() - start < max_s:
        clock.advance(0.1)
        deadline = time.monotonic() + 0.02
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.005)
    return clock.monotonic() - start


def test_timeouts_for_a_whole_lease_fence_the_node(node):
    agent, control, clock = node
    advance_until(clock, lambda: control.beats >= 2, 5)
    control.answer = TimeoutError("deadline exceeded")
    last_ok = control.last_ok
    advance_until(clock, lambda: agent._fenced, 30)
    assert 10.0 <= clock.monotonic() - last_ok <= 11.5, "fenced one lease after the last renewal was sent"
    agent.handle(Assignment("t-1", 1, run="echo no"))
    wait_until(lambda: control.reports, timeout=5, message="a refusal")
    (report,) = control.reports
    assert report.state == RunState.FAILED and report.message.startswith("node fenced")
    control.answer = Renewal(True, 10.0)
    advance_until(clock, lambda: not agent._fenced, 5)
    assert agent._fenced == "", "a renewal lifts the fence"


def test_a_broker_that_is_down_does_not_fence(node):
    agent, control, clock = node
    control.answer = BrokerDown("connection refused")
    advance_until(clock, lambda: agent._fenced, 30)
    assert agent._fenced == ""


def test_the_brokers_lease_is_the_one_kept(node):
    agent, control, clock = node
    control.answer = Renewal(True, 3.0)
    advance_until(clock, lambda: control.beats >= 2, 5)
    control.answer = TimeoutError("deadline exceeded")
    last_ok = control.last_ok
    advance_until(clock, lambda: agent._fenced, 30)
    assert 3.0 <= clock.monotonic() - last_ok <= 4.5


def test_a_forgotten_node_fences_at_once_and_registers_again(node, caplog):
    _, control, clock = node
    control.answer = Renewal(False, 10.0)
    advance_until(clock, lambda: control.registrations >= 2, 5)
    assert control.registrations == 2
    assert "node fenced: killing its tasks" in caplog.text  # then registered: it takes work again
