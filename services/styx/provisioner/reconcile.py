"""The reconcile loop: compare the store with what each provider reports.

An instance that vanished (a local agent process that died) is marked TERMINATED, and a
provider instance the store does not own (a leak) is terminated once seen unowned for
the leak grace. One replica at a time (the holder of the "reconciler" lease) reaps leaks."""

from __future__ import annotations

import logging

from sqlalchemy import (
    select,
)

from styx.common.faults import crash_point
from styx.provider import (
    InstanceStatus,
    ProviderInstance,
    ProviderStatus,
)
from styx.provisioner.model import (
    InstanceState,
)
from styx.provisioner.tables import instances
from styx.provisioner.workers import Workers

log = logging.getLogger(__name__)


class Reconciler(Workers):
    """The reconcile part of ``Provisioner``."""

    def _reconcile_loop(self) -> None:
        while not self._clock.wait(self._stop, self._interval):
            try:
                if self._reconcile_lease.hold():
                    self.reconcile_once()
            except Exception as exc:
                log.error("reconcile pass failed", exc_info=exc)

    def reconcile_once(self) -> None:
        """One pass: refresh provider status, mark vanished instances TERMINATED, and
        terminate provider instances the store does not own.
        """
        self.refresh_status()
        # Read the store BEFORE asking providers: an instance created during the listing is
        # then absent from this snapshot and cannot be mistaken for a dead one.
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(instances)).mappings()]
        for name, provider in self._providers.items():
            if not self._status.get(name, ProviderStatus(False)).enabled:
                continue
            try:
                observed = provider.list_instances()
            except Exception as exc:
                log.warning("provider %s list_instances() raised", name, exc_info=exc)
                continue
            crash_point("provisioner.reconcile")
            live = {i.instance_id for i in observed if i.status is not InstanceStatus.TERMINATED}
            owned = {r["node_id"]: r for r in rows if r["provider"] == name}
            for row in owned.values():
                if row["state"] == InstanceState.RUNNING.value and row["instance_id"] not in live:
                    log.info("instance is gone", extra={"node_id": row["node_id"], "instance_id": row["instance_id"]})
                    self._set_instance(row["node_id"], InstanceState.TERMINATED, only_if=InstanceState.RUNNING)
                    self._tell_gone(row["node_id"], f"instance {row['instance_id']} vanished")
            stamp = self._clock.now()
            for inst in observed:
                if inst.plane_id != self.plane_id:
                    self._note_foreign(name, inst)
                    continue
                record = owned.get(inst.node_id)
                if inst.status is InstanceStatus.TERMINATED or (
                    record is not None and record["state"] != InstanceState.TERMINATED.value
                ):
                    self._unowned_since.pop(inst.instance_id, None)
                    continue
                first_seen = self._unowned_since.setdefault(inst.instance_id, stamp)
                if stamp - first_seen < self._leak_grace_s:
                    continue
                leaked = {"node_id": inst.node_id, "instance_id": inst.instance_id}
                log.warning("terminating leaked instance", extra=leaked)
                try:
                    provider.terminate(inst.instance_id)
                    self._unowned_since.pop(inst.instance_id, None)
                except Exception as exc:
                    log.warning("could not terminate leaked instance %s", inst.instance_id, exc_info=exc)

    def _note_foreign(self, provider: str, inst: ProviderInstance) -> None:
        """Another control plane's instance (or one without a plane label): never reaped
        here, since this plane cannot know whether its owner still wants it. Logged once."""
        if inst.instance_id in self._foreign_seen:
            return
        self._foreign_seen.add(inst.instance_id)
        log.info(
            "instance belongs to another control plane; left alone",
            extra={"provider": provider, "instance_id": inst.instance_id, "plane": inst.plane_id or "(none)"},
        )

    def _tell_gone(self, node_id: str, reason: str) -> None:
        if self._on_instance_gone is None:
            return
        try:
            self._on_instance_gone(node_id, reason)
        except Exception as exc:
            log.warning("could not report node %s gone; its lease will expire: %s", node_id, exc)
