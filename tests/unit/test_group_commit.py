"""Group commit: concurrent callers' items are written together, each caller sees its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from helpers import wait_until
from styx.common.group_commit import GroupCommit


class Gate:
    """A write function that records its rounds and can hold a round until released."""

    def __init__(self) -> None:
        self.rounds: list[list[int]] = []
        self.hold = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()

    def write(self, items: Sequence[int]) -> list[int | BaseException]:
        self.rounds.append(list(items))
        if self.hold.is_set():
            self.held.set()
            assert self.release.wait(10)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


def start(group: GroupCommit[int, int], item: int, out: dict[int, object]) -> threading.Thread:
    def call() -> None:
        try:
            out[item] = group.run(item)
        except Exception as exc:
            out[item] = exc

    th = threading.Thread(target=call)
    th.start()
    return th


def test_items_queued_during_a_round_share_the_next_one_and_get_their_own_results() -> None:
    gate = Gate()
    group: GroupCommit[int, int] = GroupCommit(gate.write)
    gate.hold.set()
    out: dict[int, object] = {}
    first = start(group, 1, out)
    assert gate.held.wait(10)
    gate.hold.clear()
    others = [start(group, i, out) for i in (2, 3, -4, 5)]
    wait_until(lambda: len(group._queue) == 4, message="four items queued behind the round in flight")
    gate.release.set()
    for th in [first, *others]:
        th.join(10)
    assert gate.rounds == [[1], [2, 3, -4, 5]]
    assert {k: v for k, v in out.items() if not isinstance(v, Exception)} == {1: 10, 2: 20, 3: 30, 5: 50}
    assert str(out[-4]) == "bad -4"  # only that caller sees its item's failure


def test_the_leader_returns_once_its_own_item_is_written() -> None:
    """No caller waits behind an endless stream of others: the lead passes on."""
    gate = Gate()
    group: GroupCommit[int, int] = GroupCommit(gate.write, max_weight=1)
    gate.hold.set()
    out: dict[int, object] = {}
    leader = start(group, 1, out)
    assert gate.held.wait(10)
    follower = start(group, 2, out)
    wait_until(lambda: len(group._queue) == 1, message="the second item queued")
    gate.held.clear()
    gate.release.set()  # round 1 ends; round 2 (the follower's) is written by the follower itself
    leader.join(10)
    follower.join(10)
    assert not leader.is_alive() and out == {1: 10, 2: 20}
    assert gate.rounds == [[1], [2]]


def test_a_round_that_raises_fails_its_callers_and_the_next_caller_still_gets_through() -> None:
    calls = {"n": 0}

    def write(items: Sequence[int]) -> list[int | BaseException]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("store unavailable")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(write)
    with pytest.raises(ConnectionError):
        group.run(1)
    assert group.run(2) == 2


def test_a_round_is_bounded_by_weight_but_always_takes_one_item() -> None:
    gate = Gate()
    group: GroupCommit[int, int] = GroupCommit(gate.write, max_weight=5, weight=lambda i: i)
    gate.hold.set()
    out: dict[int, object] = {}
    first = start(group, 1, out)
    assert gate.held.wait(10)
    gate.hold.clear()
    rest = []
    for i in (9, 2, 3, 4):  # queued in this order
        rest.append(start(group, i, out))
        queued = len(rest)
        wait_until(lambda: len(group._queue) == queued, message="queued in order")  # noqa: B023
    gate.release.set()
    for th in [first, *rest]:
        th.join(10)
    assert gate.rounds == [[1], [9], [2, 3], [4]]
    assert out == {1: 10, 9: 90, 2: 20, 3: 30, 4: 40}
