"""Work items for agents and the per-node queues their WorkStreams drain."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from styx.scheduler.model import TaskSpec


@dataclass(frozen=True)
class Assign:
    """Work item: start an attempt."""

    task_id: str
    job_id: str
    attempt: int
    spec: TaskSpec
    gpu_indices: tuple[int, ...]
    has_workdir: bool = False
    # Multi-node tasks: this node's rank, the task's node count, every rank's address.
    rank: int = 0
    num_nodes: int = 1
    node_addresses: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, int, int]:
        """Identity used to send each item at most once per stream."""
        return ("assign", self.task_id, self.attempt, self.rank)


@dataclass(frozen=True)
class Cancel:
    """Work item: stop an attempt."""

    task_id: str
    attempt: int
    reason: str
    rank: int = 0

    @property
    def key(self) -> tuple[str, str, int, int]:
        """Identity used to send each item at most once per stream."""
        return ("cancel", self.task_id, self.attempt, self.rank)


WorkItem = Assign | Cancel


class Dispatcher:
    """Per-node queues of work items; an agent's WorkStream drains its node's queue.

    The queues only shorten latency: every stream also re-reads its node's outstanding
    work from the store, so an item placed by another replica (or lost in a crash) still
    arrives.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, queue.Queue[WorkItem | None]] = {}

    def attach(self, node_id: str) -> queue.Queue[WorkItem | None]:
        """Give a node a fresh queue; an older stream of the same node is told to end."""
        q: queue.Queue[WorkItem | None] = queue.Queue()
        with self._lock:
            old = self._queues.get(node_id)
            self._queues[node_id] = q
        if old is not None:
            old.put(None)
        return q

    def detach(self, node_id: str, q: queue.Queue[WorkItem | None]) -> None:
        """Forget a node's queue if it is still the current one."""
        with self._lock:
            if self._queues.get(node_id) is q:
                del self._queues[node_id]

    def send(self, node_id: str, item: WorkItem) -> bool:
        """Queue an item for a connected node; False when the node is not connected here."""
        with self._lock:
            q = self._queues.get(node_id)
        if q is None:
            return False
        q.put(item)
        return True
