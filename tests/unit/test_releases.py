"""Group release: concurrent callers' releases share broker calls and UPDATEs; nothing is lost."""

from __future__ import annotations

import threading

from helpers import wait_until
from styx.broker.core import Broker
from styx.common.placement import PLACED, Ask
from styx.common.resources import Capacity, Resources
from styx.scheduler.releases import ReleaseBatcher


def test_releases_queued_while_one_is_in_flight_go_out_in_one_call() -> None:
    calls: list[list[str]] = []
    marked: list[list[tuple[str, int]]] = []
    first_in, let_go = threading.Event(), threading.Event()

    def free(ids: list[str]) -> None:
        calls.append(ids)
        if len(calls) == 1:
            first_in.set()
            assert let_go.wait(10)

    batcher = ReleaseBatcher(free, marked.append, lambda item: [f"{item[0]}/{item[1]}"])
    leader = threading.Thread(target=batcher.release, args=([("t0", 1, 1)],))
    leader.start()
    assert first_in.wait(10)
    others = [threading.Thread(target=batcher.release, args=([(f"t{i}", 1, 1)],)) for i in range(1, 6)]
    for th in others:
        th.start()
    wait_until(lambda: len(batcher._group._queue) == 5, message="five releases to queue behind the first")
    let_go.set()
    for th in [leader, *others]:
        th.join(10)
    assert calls[0] == ["t0/1"] and sorted(calls[1]) == [f"t{i}/1" for i in range(1, 6)] and len(calls) == 2
    assert sorted(p for batch in marked for p in batch) == sorted((f"t{i}", 1) for i in range(6))


def test_a_failed_round_marks_nothing_and_does_not_wedge_the_next_caller() -> None:
    marked: list[list[tuple[str, int]]] = []
    fail = {"on": True}

    def free(ids: list[str]) -> None:
        if fail["on"]:
            raise ConnectionError("broker unavailable")

    batcher = ReleaseBatcher(free, marked.append, lambda item: [item[0]])
    batcher.release([("t1", 1, 1)])
    assert marked == []  # left unreleased in the store: the reconcile loop retries it
    fail["on"] = False
    batcher.release([("t1", 1, 1)])
    assert marked == [[("t1", 1)]]


def test_broker_release_many_frees_in_one_call_and_skips_unknown_ids(engine_factory) -> None:
    broker = Broker(engine_factory("broker"), None)
    broker.register_node("n", "local", "", Capacity(4, 8))
    placed = broker.allocate([Ask(f"a{i}", f"t{i}", Resources(cpus=1)) for i in range(4)])
    assert all(p.outcome == PLACED for p in placed)
    assert broker.release_many(["a0", "a1", "a1", "nope"]) == 2
    assert broker.get_node("n").used_cpus == 2
    assert broker.release_many(["a0"]) == 0 and broker.release("a2") and broker.get_node("n").used_cpus == 1
