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
from collections.abc import Callable, Sequence

from styx.common.group_commit import GroupCommit

log = logging.getLogger(__name__)

# (task id, attempt, number of ranks)
Item = tuple[str, int, int]
# A round takes at most this many tasks (a broker call of bounded size).
_ROUND = 2000


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
        self._group: GroupCommit[Sequence[Item], None] = GroupCommit(self._round, _ROUND, len)

    def release(self, items: Sequence[Item]) -> None:
        """Free and mark ``items``; returns when done (errors are logged, left to reconcile)."""
        if items:
            self._group.run(items)

    def _round(self, batch: Sequence[Sequence[Item]]) -> list[None]:
        items = [item for pending in batch for item in pending]
        try:
            self._free([aid for item in items for aid in self._ids(item)])
            self._mark([(task_id, attempt) for task_id, attempt, _ in items])
        except Exception as exc:
            log.warning("release of %d task(s) failed, will retry: %s", len(items), exc)
        return [None] * len(batch)
