"""Group commit: concurrent callers' writes done by one of them, in one round.

One transaction (or one remote call) per caller made its fixed cost — begin, commit,
statement set-up, a round trip — the limit of a busy service. Here each caller queues its
item; one caller at a time is the leader and writes everything queued in one round, while
the others wait for their own item's outcome. The leader writes rounds until its own item
is done, then hands the lead to a waiting caller, so no caller waits behind an endless
stream of others. Each caller returns only once its own item is written (or failed), so it
sees the same order of effects as with a round of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Slot(Generic[T, R]):
    item: T
    done: bool = False
    outcome: object = None


class GroupCommit(Generic[T, R]):
    """``run(item)`` writes ``item`` in a round with whatever other callers queued meanwhile.

    ``write(items)`` does one round and returns one outcome per item, in order; an
    exception it raises fails every item of the round. ``weight(item)`` and ``max_weight``
    bound a round (e.g. rows per transaction); one item is always taken.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Sequence[R | BaseException]],
        max_weight: int = 256,
        weight: Callable[[T], int] = lambda _item: 1,
    ) -> None:
        self._write = write
        self._max = max_weight
        self._weight = weight
        self._cv = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._leading = False

    def run(self, item: T) -> R:
        """Write ``item`` (with others'); its result, or its exception raised here."""
        mine: _Slot[T, R] = _Slot(item)
        with self._cv:
            self._queue.append(mine)
            while not mine.done and self._leading:
                self._cv.wait()
            if not mine.done:
                self._leading = True
        if not mine.done:
            self._lead(mine)
        if isinstance(mine.outcome, BaseException):
            raise mine.outcome
        return mine.outcome  # type: ignore[return-value]

    def _lead(self, mine: _Slot[T, R]) -> None:
        try:
            while not mine.done:
                with self._cv:
                    batch = self._take()
                self._round(batch)
        finally:
            with self._cv:
                self._leading = False
                self._cv.notify_all()  # a waiting caller whose item is still queued leads next

    def _take(self) -> list[_Slot[T, R]]:
        taken = 0
        weight = 0
        for slot in self._queue:
            w = self._weight(slot.item)
            if taken and weight + w > self._max:
                break
            taken += 1
            weight += w
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _round(self, batch: list[_Slot[T, R]]) -> None:
        try:
            outcomes: Sequence[object] = self._write([slot.item for slot in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"group commit: {len(outcomes)} outcomes for {len(batch)} items")
        except BaseException as exc:  # handed to every caller of the round
            outcomes = [exc] * len(batch)
        with self._cv:
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.outcome, slot.done = outcome, True
            self._cv.notify_all()
