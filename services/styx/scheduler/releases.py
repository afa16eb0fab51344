"""Freeing finished tasks' allocations in batches (group release).

Every task that ends frees its allocation at the broker and then marks itself released.
One broker call and one UPDATE per task made that a large share of the scheduler's work
when many tasks end at once. Here concurrent callers share the work: the first caller
becomes the leader and frees everything queued (its own and what others queue meanwhile)
in one ``release_many`` call and one UPDATE, round after round, while the others wait for
their own items. Each caller still returns only once its release is done (or failed), so
callers see the same order of effects as with one call each. A failed round leaves its
tasks unreleased in the store; the reconcile loop tries them again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# (task id, attempt, number of ranks)
Item = tuple[str, int, int]
# A round takes at most this many tasks (a broker call of bounded size).
_ROUND = 2000


@dataclass
class _Pending:
    items: Sequence[Item]
    done: threading.Event = field(default_factory=threading.Event)


class ReleaseBatcher:
    """``release(items)`` frees the allocations of ``items`` (rank ids) and marks them released."""

    def __init__(
        self,
        free: Callable[[list[str]], None],
        mark_released: Callable[[list[tuple[str, int]]], None],
        allocation_ids: Callable[[Item], list[str]],
    ) -> None:
        self._free = free
        self._mark = mark_released
        self._ids = allocation_ids
        self._guard = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False

    def release(self, items: Sequence[Item], timeout_s: float = 60.0) -> None:
        """Free and mark ``items``; returns when done (errors are logged, left to reconcile)."""
        if not items:
            return
        mine = _Pending(items)
        with self._guard:
            self._queue.append(mine)
            lead = not self._leading
            self._leading = self._leading or lead
        if not lead:
            mine.done.wait(timeout_s)
            return
        try:
            while True:
                with self._guard:
                    batch, self._queue = self._take()
                    if not batch:
                        self._leading = False
                        return
                self._round(batch)
        except BaseException:
            with self._guard:
                self._leading = False
            raise

    def _take(self) -> tuple[list[_Pending], list[_Pending]]:
        batch: list[_Pending] = []
        count = 0
        for i, pending in enumerate(self._queue):
            if batch and count + len(pending.items) > _ROUND:
                return batch, self._queue[i:]
            batch.append(pending)
            count += len(pending.items)
        return batch, []

    def _round(self, batch: list[_Pending]) -> None:
        items = [item for pending in batch for item in pending.items]
        try:
            self._free([aid for item in items for aid in self._ids(item)])
            self._mark([(task_id, attempt) for task_id, attempt, _ in items])
        except Exception as exc:
            log.warning("release of %d task(s) failed, will retry: %s", len(items), exc)
        finally:
            for pending in batch:
                pending.done.set()
