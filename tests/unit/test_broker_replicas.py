"""Broker replicas on one PostgreSQL: any replica answers any call, capacity is never
overcommitted across replicas, heartbeats reach whichever replica checks leases, and a
killed replica's intents are sent by another."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Engine
from test_broker_outbox import Crash, IdempotentCloud

from styx.broker.core import Broker
from styx.common.clock import FakeClock
from styx.common.placement import PLACED, WAITING, Ask
from styx.common.resources import Capacity, Resources

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(engine_factory: Callable[[str], Engine]) -> Callable[[str], Engine]:
    if "postgres" not in engine_factory("broker").url.drivername:
        pytest.skip("broker replicas share PostgreSQL")
    return engine_factory


def test_any_replica_sees_and_places_on_nodes_registered_at_another(pg: Callable[[str], Engine]) -> None:
    a, b = Broker(pg("broker"), None, replica_id="a"), Broker(pg("broker"), None, replica_id="b")
    a.register_node("n", "local", "", Capacity(4, 8))
    assert [n.node_id for n in b.list_nodes()] == ["n"]
    (first,) = b.allocate([Ask("x", "tx", Resources(cpus=3))])
    assert first.outcome == PLACED
    (second,) = a.allocate([Ask("y", "ty", Resources(cpus=3))])
    assert second.outcome != PLACED, "replica a overcommitted the node replica b filled"
    assert a.allocate([Ask("x", "tx", Resources(cpus=3))])[0].node_id == "n"  # idempotent across replicas
    assert a.release("x") and b.allocate([Ask("y", "ty", Resources(cpus=3))])[0].outcome == PLACED


def test_concurrent_allocations_on_two_replicas_never_overcommit(pg: Callable[[str], Engine]) -> None:
    replicas = [Broker(pg("broker"), None, replica_id=f"r{i}") for i in range(2)]
    replicas[0].register_node("n", "local", "", Capacity(10, 100))
    start = threading.Barrier(2)
    placed: list[str] = []

    def work(i: int) -> None:
        start.wait()
        for k in range(10):
            (res,) = replicas[i].allocate([Ask(f"{i}-{k}", f"t{i}-{k}", Resources(cpus=1))])
            if res.outcome == PLACED:
                placed.append(res.allocation_id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(placed) == 10
    for broker in replicas:
        assert broker.get_node("n").used_cpus == 10


def test_heartbeats_to_one_replica_keep_the_node_at_the_one_checking_leases(pg: Callable[[str], Engine]) -> None:
    clock = FakeClock()
    checker = Broker(pg("broker"), None, lease_seconds=15, clock=clock, replica_id="checker")
    other = Broker(pg("broker"), None, lease_seconds=15, clock=clock, replica_id="other")
    checker.register_node("n", "local", "", Capacity(2, 4))
    for _ in range(3):
        clock.advance(10)
        assert other.heartbeat("n")
        checker.reconcile()
        assert checker.get_node("n").state == "READY"
    clock.advance(16)
    checker.reconcile()
    assert other.get_node("n").state == "LOST"  # and the other replica sees it


def test_a_killed_replicas_intent_is_sent_once_by_another(pg: Callable[[str], Engine]) -> None:
    clock = FakeClock()
    cloud = IdempotentCloud()
    cloud.crash_after_create = True
    dying = Broker(pg("broker"), cloud, clock=clock, replica_id="dying")
    dying.reconcile()  # it held the reconciler lease when it died
    with pytest.raises(Crash):
        dying.allocate([Ask("a", "t", Resources(cpus=2))])
    cloud.crash_after_create = False
    survivor = Broker(pg("broker"), cloud, clock=clock, replica_id="survivor")
    survivor.reconcile()
    assert len(cloud.sent) == 1  # the dead replica's reconciler lease has not expired yet
    clock.advance(6)
    survivor.reconcile()
    assert len(cloud.instances) == 1 and cloud.sent == [cloud.sent[0]] * 2
    (res,) = survivor.allocate([Ask("a", "t", Resources(cpus=2))])
    assert res.outcome == WAITING and "to boot" in res.reason
    (attempt,) = survivor.list_attempts()
    assert attempt.state == "pending" and attempt.operation_id == "op-0"
