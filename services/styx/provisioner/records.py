"""The provisioner's shared state and its store records (operations, instances).

``Records`` is the bottom layer of ``Provisioner``: it declares the state that
``Provisioner.__init__`` sets up and reads and writes the operation and instance rows
that every part above it (providers, workers, operations, reconcile) uses."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    select,
    update,
)

from styx.common.clock import Clock
from styx.common.errors import InvalidArgument, NotFound
from styx.common.leases import Lease
from styx.provider import (
    AgentLaunch,
    Provider,
    ProviderErrorKind,
    ProviderStatus,
)
from styx.provisioner.model import (
    InstanceState,
    Operation,
    OperationKind,
    OperationState,
    WorkerThreads,
    instance_from_row,
)
from styx.provisioner.tables import instances, operations

log = logging.getLogger(__name__)


class Records:
    """Shared state of ``Provisioner`` (set by its ``__init__``) and its store records."""

    _engine: Engine
    _clock: Clock
    replica_id: str
    plane_id: str
    _op_lease_s: float
    _reconcile_lease: Lease
    _foreign_seen: set[str]
    _providers: dict[str, Provider]
    _launch: AgentLaunch
    _interval: float
    _leak_grace_s: float
    _unowned_since: dict[str, float]
    _on_instance_gone: Callable[[str, str], None] | None
    _status: dict[str, ProviderStatus]
    _changed: threading.Condition
    _stop: threading.Event
    _workers: WorkerThreads
    _admit: threading.Lock
    _node_locks: dict[str, threading.Lock]
    _node_locks_guard: threading.Lock
    _reconciler: threading.Thread | None

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _op_by_request(self, request_id: str) -> Operation | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(operations).where(operations.c.request_id == request_id)).mappings().first()
            return None if row is None else self._op_from_row(conn, row)

    def _instance_row(self, node_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(instances).where(instances.c.node_id == node_id)).mappings().first()
            return None if row is None else dict(row)

    def _op_from_row(self, conn: Connection, row: Mapping[Any, Any]) -> Operation:
        inst_row = conn.execute(select(instances).where(instances.c.node_id == row["node_id"])).mappings().first()
        kind = OperationKind(row["kind"])
        instance = None
        if inst_row is not None and (kind is OperationKind.TERMINATE or inst_row["request_id"] == row["request_id"]):
            instance = instance_from_row(inst_row)
        error_kind = ProviderErrorKind(row["error_kind"]) if row["error_kind"] else None
        return Operation(
            operation_id=str(row["operation_id"]),
            request_id=str(row["request_id"]),
            kind=kind,
            state=OperationState(row["state"]),
            node_id=str(row["node_id"]),
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            instance=instance,
            error_kind=error_kind,
            error_message=str(row["error_message"] or ""),
        )

    def _set_op(self, op_id: str, state: OperationState) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(operations)
                .where(operations.c.operation_id == op_id)
                .values(state=state.value, updated_at=self._clock.now())
            )
        self._notify()

    def _finish(self, op_id: str, error_kind: ProviderErrorKind | None = None, message: str = "") -> None:
        state = OperationState.FAILED if error_kind else OperationState.DONE
        with self._engine.begin() as conn:
            conn.execute(
                update(operations)
                .where(operations.c.operation_id == op_id)
                .values(
                    state=state.value,
                    error_kind=error_kind.value if error_kind else "",
                    error_message=message,
                    updated_at=self._clock.now(),
                )
            )
        self._notify()

    def _set_instance(
        self,
        node_id: str,
        state: InstanceState,
        instance_id: str | None = None,
        only_if: InstanceState | None = None,
    ) -> None:
        values: dict[str, object] = {"state": state.value, "updated_at": self._clock.now()}
        if instance_id is not None:
            values["instance_id"] = instance_id
        stmt = update(instances).where(instances.c.node_id == node_id)
        if only_if is not None:
            stmt = stmt.where(instances.c.state == only_if.value)
        with self._engine.begin() as conn:
            conn.execute(stmt.values(**values))
        self._notify()

    def _node_lock(self, node_id: str) -> threading.Lock:
        with self._node_locks_guard:
            return self._node_locks.setdefault(node_id, threading.Lock())

    def get_operation(self, operation_id: str) -> Operation:
        """The operation's current state. NotFound when unknown."""
        if not operation_id:
            raise InvalidArgument("operation_id: required")
        with self._engine.connect() as conn:
            row = conn.execute(select(operations).where(operations.c.operation_id == operation_id)).mappings().first()
            if row is None:
                raise NotFound(f"operation_id: no operation {operation_id!r}")
            return self._op_from_row(conn, row)
