"""Cluster operations of the broker: each one changes the registry under the lock and
talks to the provisioner only after releasing it (terminations through the outbox,
stop/start directly, in between a check and its bookkeeping)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from styx.broker.clusters import Clusters, ClusterView
from styx.broker.model import ProvisionerPort
from styx.broker.offers import OfferBook
from styx.broker.provisioning import Provisioning
from styx.broker.view_lock import ViewLock
from styx.common.errors import FailedPrecondition
from styx.common.resources import Resources


class ClusterOps:
    """``sky launch -c``, ``down``, ``stop``, ``start`` and autostop, outside-the-lock calls included."""

    def __init__(
        self,
        lock: ViewLock,
        clusters: Clusters,
        provisioning: Provisioning,
        provisioner: ProvisionerPort | None,
        book: OfferBook,
    ) -> None:
        self._lock = lock
        self._clusters = clusters
        self._provisioning = provisioning
        self._provisioner = provisioner
        self._book = book

    def create(
        self, name: str, resources: Resources, num_nodes: int, idle_minutes: int = 0, autostop_down: bool = False
    ) -> ClusterView:
        """Create a cluster (or reuse a live one) and provision its nodes."""
        self._book.refresh()
        with self._lock:
            view = self._clusters.create(name, resources, num_nodes, idle_minutes, autostop_down)
        self._provisioning.drain()
        return view

    def get(self, name: str) -> ClusterView:
        """One cluster; NotFound when unknown."""
        with self._lock.reading():
            return self._clusters.get(name)

    def list(self, include_down: bool = False) -> builtins.list[ClusterView]:
        """Clusters, newest first."""
        with self._lock.reading():
            return self._clusters.list(include_down)

    def set_autostop(self, name: str, idle_minutes: int, down: bool) -> ClusterView:
        """Set (or clear with 0) a cluster's autostop."""
        with self._lock:
            return self._clusters.set_autostop(name, idle_minutes, down)

    def down(self, name: str, reason: str = "torn down by user") -> ClusterView:
        """Tear a cluster down: its nodes go, their instances are terminated; idempotent."""
        with self._lock:
            view = self._clusters.down(name, reason)
        self._provisioning.drain()
        return view

    def stop(self, name: str, reason: str = "stopped by user") -> ClusterView:
        """Stop a cluster's instances; FailedPrecondition, with nothing changed, when its provider cannot."""
        with self._lock:
            view = self._clusters.stoppable(name)
            if view is None:
                return self._clusters.get(name)
            node_ids = list(view.node_ids)
        self._power(node_ids, "stop")
        with self._lock:
            return self._clusters.stopped(name, reason)

    def start(self, name: str) -> ClusterView:
        """Start a stopped cluster's instances; it is UP once its agents re-register."""
        with self._lock:
            view = self._clusters.startable(name)
            if view is None:
                return self._clusters.get(name)
            node_ids = list(view.node_ids)
        self._power(node_ids, "start")
        with self._lock:
            return self._clusters.starting(name)

    def _power(self, node_ids: Sequence[str], action: str) -> None:
        if self._provisioner is None:
            raise FailedPrecondition("no provisioner: nodes cannot be stopped or started")
        call = self._provisioner.stop if action == "stop" else self._provisioner.start
        for node_id in node_ids:
            call(node_id)

    def autostop(self, name: str, why: str, down: bool) -> None:
        """Apply an idle cluster's autostop: stop it, or tear it down where asked or where it cannot stop."""
        if down:
            self.down(name, why)
            return
        try:
            self.stop(name, why)
        except FailedPrecondition as exc:
            # The provider cannot stop instances (local): tearing down is what stops billing.
            self.down(name, f"{why} (torn down: {exc.message})")
