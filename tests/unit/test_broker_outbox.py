"""The broker's provisioning outbox: intents commit before any cloud call, no lock is held
across a call, a crash anywhere resumes with the same idempotency key, and the in-memory
view never runs ahead of the store."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event

from styx.broker.core import Broker
from styx.common.clock import FakeClock
from styx.common.offers import Offer
from styx.common.placement import PLACED, WAITING, Ask
from styx.common.resources import Capacity, Resources

OFFER = Offer("aws", "us-east-1", "us-east-1a", "m6i.xlarge", 4, 16, price_per_hour=0.19)


class Crash(BaseException):
    """A kill -9 of the broker at this point: nothing after it runs (not an Exception)."""


class IdempotentCloud:
    """A provisioner that, like the real one, creates one instance per request id."""

    def __init__(self) -> None:
        self.instances: dict[str, str] = {}  # request id -> operation id
        self.sent: list[str] = []
        self.crash_after_create = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def list_offers(self) -> list[Offer]:
        return [OFFER]

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        self.sent.append(request_id)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        op = self.instances.setdefault(request_id, f"op-{len(self.instances)}")
        if self.crash_after_create:
            raise Crash  # the cloud created it; the broker dies before recording the answer
        return op

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        return "running", ""

    def terminate(self, node_id: str) -> None:
        pass

    def stop(self, node_id: str) -> None:
        pass

    def start(self, node_id: str) -> None:
        pass


def _ask(i: int = 1) -> Ask:
    return Ask(f"a{i}", f"t{i}", Resources(cpus=2))


def test_a_crash_after_the_cloud_create_resumes_the_same_instance(engine_factory):
    cloud = IdempotentCloud()
    cloud.crash_after_create = True
    broker = Broker(engine_factory("broker"), cloud)
    with pytest.raises(Crash):
        broker.allocate([_ask()])
    assert len(cloud.instances) == 1

    cloud.crash_after_create = False
    restarted = Broker(engine_factory("broker"), cloud)
    restarted.reconcile()  # resumes the intent with its key
    (res,) = restarted.allocate([_ask()])
    assert res.outcome == WAITING and "to boot" in res.reason  # the node in flight, not a second one
    assert len(cloud.instances) == 1, "a second instance was created after the crash"
    assert len(set(cloud.sent)) == 1 and len(cloud.sent) == 2  # the same key, sent again
    (attempt,) = restarted.list_attempts()
    assert attempt.state == "pending" and attempt.operation_id == "op-0"


def test_an_intent_is_committed_before_the_cloud_is_called(engine_factory):
    cloud = IdempotentCloud()
    cloud.gate = threading.Event()
    broker = Broker(engine_factory("broker"), cloud)
    worker = threading.Thread(target=broker.allocate, args=([_ask()],))
    worker.start()
    try:
        assert cloud.entered.wait(10)
        # Another process (a restarted broker) reading the store sees the intent already.
        (attempt,) = Broker(engine_factory("broker"), None).list_attempts()
        assert attempt.state == "intent" and attempt.operation_id == ""
    finally:
        cloud.gate.set()
        worker.join(10)
    assert broker.list_attempts()[0].state == "pending"


def test_no_broker_call_waits_behind_a_slow_provision(engine_factory):
    cloud = IdempotentCloud()
    cloud.gate = threading.Event()
    broker = Broker(engine_factory("broker"), cloud)
    broker.register_node("busy", "local", "", Capacity(1, 1))
    worker = threading.Thread(target=broker.allocate, args=([_ask()],))
    worker.start()
    done = threading.Event()

    def others() -> None:
        broker.heartbeat("busy")
        broker.register_node("other", "local", "", Capacity(8, 32))
        broker.allocate([Ask("b", "tb", Resources(cpus=1))])
        done.set()

    try:
        assert cloud.entered.wait(10)
        threading.Thread(target=others, daemon=True).start()
        assert done.wait(10), "broker calls waited for the provisioner (a lock held across the call)"
    finally:
        cloud.gate.set()
        worker.join(10)


def test_a_failed_allocation_write_leaves_node_usage_untouched(engine_factory):
    engine = engine_factory("broker")
    broker = Broker(engine, None)
    broker.register_node("n", "local", "", Capacity(4, 8))
    fail = {"on": True}

    def refuse(conn, cursor, statement, params, context, executemany):
        if fail["on"] and statement.lstrip().upper().startswith("INSERT INTO BROKER_ALLOCATIONS"):
            raise RuntimeError("disk full")

    event.listen(engine, "before_cursor_execute", refuse)
    with pytest.raises(RuntimeError):
        broker.allocate([Ask("a", "t", Resources(cpus=4))])
    node = broker.get_node("n")
    assert (node.used_cpus, node.used_memory_gib) == (0, 0), "memory ran ahead of the store"
    fail["on"] = False
    (res,) = broker.allocate([Ask("a", "t", Resources(cpus=4))])
    assert res.outcome == PLACED and broker.get_node("n").used_cpus == 4


def test_leases_expire_on_the_injected_clock(engine_factory):
    clock = FakeClock()
    broker = Broker(engine_factory("broker"), None, lease_seconds=15, clock=clock)
    broker.register_node("n", "local", "", Capacity(2, 4))
    clock.advance(14)
    broker.reconcile()
    assert broker.get_node("n").state == "READY"
    clock.advance(2)
    broker.reconcile()
    assert broker.get_node("n").state == "LOST"
    assert broker.heartbeat("n") and broker.get_node("n").state == "READY"


def test_a_provision_that_never_registers_times_out_on_the_clock(engine_factory):
    clock = FakeClock()
    cloud = IdempotentCloud()
    broker = Broker(engine_factory("broker"), cloud, provision_timeout_s=300, clock=clock)
    broker.allocate([_ask()])
    clock.advance(301)
    broker.reconcile()
    (attempt,) = broker.list_attempts()
    assert attempt.state == "failed" and "within 300 s" in attempt.error


def test_broker_modules_import_no_cycle_and_nothing_imports_the_facade():
    """Every import counts: function-level and TYPE_CHECKING ones too."""
    import ast
    from pathlib import Path

    import styx.broker

    root = Path(styx.broker.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        name = f"styx.broker.{path.stem}"
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("styx.broker"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("styx.broker"))
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    importers_of_core = sorted(m for m, deps in graph.items() if "styx.broker.core" in deps)
    assert set(importers_of_core) <= {"styx.broker.main", "styx.broker.servicer"}, importers_of_core

    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, f"import cycle: {' -> '.join([*trail, m, d])}"
            if d not in state:
                visit(d, [*trail, m])
        state[m] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_a_request_naming_an_arch_is_never_placed_on_a_node_of_the_other(engine_factory):
    arm = Offer("aws", "us-east-1", "us-east-1a", "m7g.xlarge", 4, 16, price_per_hour=0.16, arch="arm64")

    class ArmCloud(IdempotentCloud):
        def list_offers(self) -> list[Offer]:
            return [arm]

    broker = Broker(engine_factory("broker"), ArmCloud())
    (first,) = broker.allocate([Ask("a", "t", Resources(cpus=2, arch="arm64"))])
    assert first.outcome == WAITING and "m7g.xlarge" in first.reason
    (attempt,) = broker.list_attempts()
    broker.register_node(attempt.node_id, "aws", "i-1", Capacity(4, 16), "us-east-1", "us-east-1a", "m7g.xlarge")
    broker.register_node(attempt.node_id, "aws", "i-1", Capacity(4, 16), "us-east-1", "us-east-1a", "m7g.xlarge")
    assert broker.get_node(attempt.node_id).arch == "arm64"  # kept across the agent's re-registration
    (x86,) = broker.allocate([Ask("b", "tb", Resources(cpus=2, arch="x86_64"))])
    assert x86.outcome != PLACED, "an x86 request was placed on an ARM node"
    (any_arch,) = broker.allocate([Ask("c", "tc", Resources(cpus=2))])
    (same,) = broker.allocate([Ask("a", "t", Resources(cpus=2, arch="arm64"))])
    assert any_arch.outcome == PLACED and same.outcome == PLACED
