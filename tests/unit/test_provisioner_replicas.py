"""Provisioner replicas on one store: an operation is run by one replica at a time, a dead
replica's operations are taken over once its claims expire, one replica reconciles, and
max_instances holds across replicas."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, event
from test_provisioner_core import LAUNCH, OFFER, FakeProvider

from helpers import wait_until
from styx.common.clock import FakeClock
from styx.provisioner.core import OperationState, Provisioner


def _replica(engine: Engine, fake: FakeProvider, name: str, clock: FakeClock) -> Provisioner:
    core = Provisioner(
        engine, {"fake": fake}, LAUNCH, reconcile_interval_s=3600, replica_id=name, op_lease_s=15, clock=clock
    )
    core.start(reconcile=False)
    return core


def test_a_dead_replicas_operation_is_taken_over_after_its_claim_expires(
    engine_factory: Callable[[str], Engine],
) -> None:
    clock = FakeClock()
    engine = engine_factory("provisioner")
    hung, fresh = FakeProvider(), FakeProvider()
    hung.gate = threading.Event()  # replica A's create never returns: A is as good as dead
    a = _replica(engine, hung, "a", clock)
    b = _replica(engine, fresh, "b", clock)
    try:
        op = a.provision("req-1", OFFER, "node-1")
        wait_until(lambda: hung.create_calls == ["req-1"], message="A to start creating")
        a._stop.set()  # A stops renewing its claims (killed)
        assert b.take_over() == 0, "B took an operation whose owner's claim is still fresh"
        clock.advance(16)  # B's own claim keeper may take it over first: either way B runs it
        b.take_over()
        wait_until(lambda: b.get_operation(op.operation_id).state is OperationState.DONE, message="B to finish")
        assert fresh.create_calls == ["req-1"]  # the same idempotency key reached the cloud
        assert b.take_over() == 0  # done: nobody runs it again
    finally:
        hung.gate.set()
        a.stop(timeout_s=2)
        b.stop(timeout_s=2)


def test_a_restarted_replica_resumes_its_own_operations_at_once(engine_factory: Callable[[str], Engine]) -> None:
    clock = FakeClock()
    engine = engine_factory("provisioner")
    hung = FakeProvider()
    hung.gate = threading.Event()
    first = _replica(engine, hung, "a", clock)
    op = first.provision("req-1", OFFER, "node-1")
    wait_until(lambda: hung.create_calls == ["req-1"], message="the first life to start creating")
    first._stop.set()
    fake = FakeProvider()
    again = _replica(engine, fake, "a", clock)  # same replica id, no clock advance
    try:
        wait_until(lambda: again.get_operation(op.operation_id).state is OperationState.DONE, message="resume")
        assert fake.create_calls == ["req-1"]
    finally:
        hung.gate.set()
        first.stop(timeout_s=2)
        again.stop(timeout_s=2)


def test_one_replica_at_a_time_holds_the_reconciler_lease(engine_factory: Callable[[str], Engine]) -> None:
    clock = FakeClock()
    engine = engine_factory("provisioner")
    a = _replica(engine, FakeProvider(), "a", clock)
    b = _replica(engine, FakeProvider(), "b", clock)
    try:
        assert a._reconcile_lease.hold() and not b._reconcile_lease.hold()
        a.stop(timeout_s=2)  # hands the lease back
        assert b._reconcile_lease.hold()
    finally:
        b.stop(timeout_s=2)


@pytest.mark.postgres
def test_max_instances_holds_across_replicas(engine_factory: Callable[[str], Engine]) -> None:
    if "postgres" not in engine_factory("provisioner").url.drivername:
        pytest.skip("replicas share PostgreSQL; SQLite serialises writers anyway")
    clock = FakeClock()
    fake = FakeProvider()
    engines = [engine_factory("provisioner") for _ in range(2)]
    replicas = [_replica(e, fake, f"r{i}", clock) for i, e in enumerate(engines)]
    assert OFFER.max_instances == 3
    for i in range(2):  # two of the three allowed exist: the race is for the last one
        replicas[0].provision(f"setup-{i}", OFFER, f"setup-{i}")
    # Each replica, having counted the live instances, waits for the other to count too:
    # without a lock across replicas both see 0 and both insert. With it, the second one
    # cannot count before the first commits, and the barrier gives up after a second.
    counted = threading.Barrier(2, timeout=1.0)

    def after_count(conn, cursor, statement, params, context, executemany):
        if statement.split("\n")[0].strip().upper() == "SELECT PROV_INSTANCES.NODE_ID":
            with contextlib.suppress(threading.BrokenBarrierError):
                counted.wait()

    for e in engines:
        event.listen(e, "after_cursor_execute", after_count)
    ops = []
    threads = [
        threading.Thread(target=lambda i=i: ops.append(replicas[i].provision(f"req-{i}", OFFER, f"node-{i}")))
        for i in range(2)
    ]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        admitted = [op for op in ops if op.state is not OperationState.FAILED]
        assert len(ops) == 2 and len(admitted) == 1, [op.error_message for op in ops]
    finally:
        for core in replicas:
            core.stop(timeout_s=2)


def test_a_node_torn_down_before_its_resumed_create_ran_gets_no_instance(
    engine_factory: Callable[[str], Engine],
) -> None:
    clock = FakeClock()
    engine = engine_factory("provisioner")
    hung = FakeProvider()
    hung.gate = threading.Event()
    first = _replica(engine, hung, "a", clock)
    first.provision("req-1", OFFER, "node-1")
    wait_until(lambda: hung.create_calls == ["req-1"], message="the first life to start creating")
    first._stop.set()  # killed mid-create
    fake = FakeProvider()
    again = Provisioner(engine, {"fake": fake}, LAUNCH, reconcile_interval_s=3600, replica_id="a", clock=clock)
    try:
        down = again.terminate("down-1", "node-1")  # the user tore it down before the restart resumed the create
        wait_until(lambda: again.get_operation(down.operation_id).state.terminal, message="terminate")
        again.start(reconcile=False)  # resumes the provision
        wait_until(
            lambda: all(op.state.terminal for op in [again.get_operation(down.operation_id)])
            and not again._workers.threads,
            message="resumed provision to settle",
        )
        assert fake.create_calls == [], "a torn-down node got a new instance"
        (inst,) = again.list_instances(include_terminated=True)
        assert inst.state.value == "terminated"
    finally:
        hung.gate.set()
        first.stop(timeout_s=2)
        again.stop(timeout_s=2)
