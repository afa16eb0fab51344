"""Running operations: claims (one replica runs each), resumption, and the provider calls.

An operation is run by the replica that claims it (``owner``, ``lease_until``; a
conditional UPDATE decides), which renews the claim while it runs; a replica that dies
leaves claims that expire, and the others take those operations over. Unfinished
operations found at start-up are resumed, which is safe because providers' ``create`` is
idempotent on the request id."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import cast

from sqlalchemy import (
    or_,
    select,
    update,
)

from styx.common.faults import crash_point
from styx.common.ids import new_id
from styx.provider import (
    PowerControl,
    ProviderErrorKind,
    capabilities_of,
)
from styx.provisioner.model import (
    InstanceState,
    OperationKind,
    OperationState,
    describe_failure,
    instance_from_row,
)
from styx.provisioner.provider_access import ProviderAccess
from styx.provisioner.tables import operations

log = logging.getLogger(__name__)


class Workers(ProviderAccess):
    """The part of ``Provisioner`` that carries operations out."""

    def take_over(self) -> int:
        """Run unfinished operations nobody holds (this replica's own from before a restart,
        or any whose claim expired); returns how many were taken."""
        c = operations.c
        with self._engine.connect() as conn:
            unfinished = conn.execute(
                select(c.operation_id, c.kind).where(
                    c.state.in_([OperationState.PENDING.value, OperationState.RUNNING.value]),
                    or_(c.owner == self.replica_id, c.lease_until < self._clock.now()),
                )
            ).all()
        taken = 0
        for op_id, kind in unfinished:
            with self._workers.lock:
                if op_id in self._workers.threads:
                    continue
            if self._spawn(op_id, OperationKind(kind)):
                log.info("resuming operation", extra={"operation_id": op_id, "kind": kind})
                taken += 1
        return taken

    def _claim(self, op_id: str) -> bool:
        """Own ``op_id`` for one lease: unowned, ours already, or its owner's claim expired."""
        c = operations.c
        stamp = self._clock.now()
        with self._engine.begin() as conn:
            return bool(
                conn.execute(
                    update(operations)
                    .where(
                        c.operation_id == op_id,
                        or_(c.owner == "", c.owner == self.replica_id, c.lease_until < stamp),
                    )
                    .values(owner=self.replica_id, lease_until=stamp + self._op_lease_s)
                ).rowcount
            )

    def _keep_claims(self) -> None:
        """Renew the claims of running operations every third of the lease; take over
        operations whose owner stopped renewing."""
        while not self._clock.wait(self._stop, self._op_lease_s / 3):
            try:
                with self._workers.lock:
                    mine = list(self._workers.threads)
                if mine:
                    with self._engine.begin() as conn:
                        conn.execute(
                            update(operations)
                            .where(operations.c.operation_id.in_(mine), operations.c.owner == self.replica_id)
                            .values(lease_until=self._clock.now() + self._op_lease_s)
                        )
                self.take_over()
            except Exception as exc:
                log.warning("operation claims: %s", exc)

    def _spawn(self, op_id: str, kind: OperationKind) -> bool:
        """Run ``op_id`` in a worker thread if this replica can claim it; True when started."""
        target = {
            OperationKind.PROVISION: self._run_provision,
            OperationKind.TERMINATE: self._run_terminate,
            OperationKind.STOP: self._run_power,
            OperationKind.START: self._run_power,
        }[kind]
        with self._workers.lock:
            if op_id in self._workers.threads or self._stop.is_set():
                return False
            if not self._claim(op_id):
                return False  # another replica runs it
            thread = threading.Thread(target=self._guarded, args=(target, op_id), name=f"op-{op_id}", daemon=True)
            self._workers.threads[op_id] = thread
        thread.start()
        return True

    def _guarded(self, target: Callable[[str], None], op_id: str) -> None:
        try:
            target(op_id)
        except Exception as exc:
            ref = new_id("err")
            log.error("operation worker crashed", exc_info=exc, extra={"operation_id": op_id, "ref": ref})
            self._finish(op_id, ProviderErrorKind.INTERNAL, f"internal error (reference {ref}); see the log")
        finally:
            with self._workers.lock:
                self._workers.threads.pop(op_id, None)

    def _run_provision(self, op_id: str) -> None:
        op = self.get_operation(op_id)
        if op.state.terminal:
            return
        self._set_op(op_id, OperationState.RUNNING)
        with self._node_lock(op.node_id):
            row = self._instance_row(op.node_id)
            if row is None:
                self._finish(op_id, ProviderErrorKind.INTERNAL, "instance record vanished")
                return
            if row["state"] == InstanceState.TERMINATED.value:
                # Torn down before its create ran (a terminate won the node lock after a
                # restart). Nothing is created now; anything a create made before a crash
                # carries the plane label and no live record, so reconcile reaps it.
                self._finish(
                    op_id, ProviderErrorKind.INVALID, "the node was terminated before its instance was created"
                )
                return
            inst = instance_from_row(row)
            provider = self._providers.get(inst.provider)
            if provider is None:
                self._finish(op_id, ProviderErrorKind.INVALID, f"provider {inst.provider!r} is not loaded")
                self._set_instance(op.node_id, InstanceState.TERMINATED)
                return
            try:
                instance_id = provider.create(
                    node_id=op.node_id,
                    offer=inst.offer,
                    spot=inst.spot,
                    labels=dict(inst.labels),
                    request_id=op.request_id,
                    agent_launch=self._launch,
                )
            except Exception as exc:
                kind, message = describe_failure(inst.provider, exc)
                self._set_instance(op.node_id, InstanceState.TERMINATED)
                self._finish(op_id, kind, message)
                return
            crash_point("provisioner.after_create")
            self._set_instance(op.node_id, InstanceState.RUNNING, instance_id=instance_id)
            log.info("instance created", extra={"node_id": op.node_id, "instance_id": instance_id})
            self._finish(op_id)

    def _run_terminate(self, op_id: str) -> None:
        op = self.get_operation(op_id)
        if op.state.terminal:
            return
        self._set_op(op_id, OperationState.RUNNING)
        with self._node_lock(op.node_id):
            row = self._instance_row(op.node_id)
            if row is None or row["state"] == InstanceState.TERMINATED.value or not row["instance_id"]:
                if row is not None:
                    self._set_instance(op.node_id, InstanceState.TERMINATED)
                self._finish(op_id)
                return
            inst = instance_from_row(row)
            provider = self._providers.get(inst.provider)
            if provider is None:
                self._finish(op_id, ProviderErrorKind.INVALID, f"provider {inst.provider!r} is not loaded")
                return
            self._set_instance(op.node_id, InstanceState.TERMINATING)
            try:
                provider.terminate(inst.instance_id)
            except Exception as exc:
                kind, message = describe_failure(inst.provider, exc)
                self._set_instance(op.node_id, InstanceState.RUNNING)
                self._finish(op_id, kind, message)
                return
            crash_point("provisioner.terminate")
            self._set_instance(op.node_id, InstanceState.TERMINATED)
            log.info("instance terminated", extra={"node_id": op.node_id, "instance_id": inst.instance_id})
            self._finish(op_id)

    def _run_power(self, op_id: str) -> None:
        """Carry out a STOP or START operation."""
        op = self.get_operation(op_id)
        if op.state.terminal:
            return
        self._set_op(op_id, OperationState.RUNNING)
        stopping = op.kind is OperationKind.STOP
        with self._node_lock(op.node_id):
            row = self._instance_row(op.node_id)
            if row is None or row["state"] == InstanceState.TERMINATED.value:
                self._finish(op_id, ProviderErrorKind.INVALID, "the instance is terminated")
                return
            inst = instance_from_row(row)
            provider = self._providers.get(inst.provider)
            if provider is None or not capabilities_of(provider).stop_start:
                self._finish(op_id, ProviderErrorKind.INVALID, f"provider {inst.provider!r} cannot {op.kind.value}")
                return
            power = cast(PowerControl, provider)  # declared stop_start: the loader checked both exist
            try:
                if stopping:
                    power.stop(inst.instance_id)
                else:
                    power.start(inst.instance_id)
            except Exception as exc:
                kind, message = describe_failure(inst.provider, exc)
                self._finish(op_id, kind, message)
                return
            self._set_instance(op.node_id, InstanceState.STOPPED if stopping else InstanceState.RUNNING)
            done = "instance stopped" if stopping else "instance started"
            log.info(done, extra={"node_id": op.node_id, "instance_id": inst.instance_id})
            self._finish(op_id)
