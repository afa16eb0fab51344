"""Provision, Terminate, Stop and Start requests: validated, admitted and recorded as
operations (idempotent on ``request_id``), then handed to a worker; and their reads.

Admission to an offer's ``max_instances`` counts and inserts in one transaction,
serialised across replicas on PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict

from sqlalchemy import (
    Connection,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound
from styx.common.ids import new_id
from styx.common.store import pg_advisory
from styx.provider import (
    PLANE_LABEL,
    Offer,
    ProviderErrorKind,
    capabilities_of,
)
from styx.provisioner.model import (
    Instance,
    InstanceState,
    Operation,
    OperationKind,
    OperationState,
    check_node_id,
    instance_from_row,
)
from styx.provisioner.tables import instances, operations
from styx.provisioner.workers import Workers

log = logging.getLogger(__name__)


class Operations(Workers):
    """The request part of ``Provisioner``."""

    def provision(
        self,
        request_id: str,
        offer: Offer,
        node_id: str,
        use_spot: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> Operation:
        """Start creating an instance of ``offer`` for ``node_id``. Idempotent on request_id."""
        labels = dict(labels or {})
        if not request_id:
            raise InvalidArgument("request_id: required; send a unique id (a UUID) per provision")
        existing = self._op_by_request(request_id)
        if existing is not None:
            return self._same_request(existing, OperationKind.PROVISION, node_id)
        check_node_id(node_id)
        if not offer.provider:
            raise InvalidArgument("offer.provider: required, e.g. 'local' (see ListProviders)")
        if not offer.instance_type:
            raise InvalidArgument("offer.instance_type: required, e.g. 'host' (see ListOffers)")
        for key in labels:
            if not key or "=" in key:
                raise InvalidArgument(f"labels: key {key!r} must be non-empty and contain no '='")
        if PLANE_LABEL in labels:
            raise InvalidArgument(f"labels: {PLANE_LABEL!r} is reserved; the provisioner sets it")
        labels[PLANE_LABEL] = self.plane_id
        provider = self._enabled_provider(offer.provider, "offer.provider")
        resolved = self._resolve_offer(provider, offer)
        t = self._clock.now()
        op_id = new_id("op")
        with self._admit:
            existing = self._op_by_request(request_id)
            if existing is not None:
                return self._same_request(existing, OperationKind.PROVISION, node_id)
            current = self._instance_row(node_id)
            if current is not None and current["state"] != InstanceState.TERMINATED.value:
                raise FailedPrecondition(
                    f"node_id: node {node_id!r} already has an instance ({current['state']}); "
                    "terminate it first or choose a new node id"
                )
            op_row = {
                "operation_id": op_id,
                "request_id": request_id,
                "kind": OperationKind.PROVISION.value,
                "state": OperationState.PENDING.value,
                "node_id": node_id,
                "error_kind": "",
                "error_message": "",
                "created_at": t,
                "updated_at": t,
            }
            inst_row = {
                "node_id": node_id,
                "provider": resolved.provider,
                "instance_id": "",
                "region": resolved.region,
                "zone": resolved.zone,
                "instance_type": resolved.instance_type,
                "offer_json": json.dumps(asdict(resolved)),
                "spot": use_spot,
                "labels_json": json.dumps(labels, sort_keys=True),
                "state": InstanceState.PENDING.value,
                "request_id": request_id,
                "created_at": t,
                "updated_at": t,
            }
            try:
                with self._engine.begin() as conn:
                    error = self._admission_error(conn, resolved)
                    if error:
                        op_row.update(
                            state=OperationState.FAILED.value,
                            error_kind=ProviderErrorKind.CAPACITY.value,
                            error_message=error,
                        )
                    conn.execute(insert(operations).values(**op_row))
                    if not error:
                        if current is not None:
                            conn.execute(instances.delete().where(instances.c.node_id == node_id))
                        conn.execute(insert(instances).values(**inst_row))
            except IntegrityError:
                # Another replica accepted the same request_id first: answer with its operation.
                existing = self._op_by_request(request_id)
                if existing is None:
                    raise
                return self._same_request(existing, OperationKind.PROVISION, node_id)
        if not error:
            self._spawn(op_id, OperationKind.PROVISION)
        self._notify()
        return self.get_operation(op_id)

    @staticmethod
    def _admission_error(conn: Connection, offer: Offer) -> str:
        """Why one more instance of ``offer`` would break its max_instances ("" if it would not).

        Runs in the inserting transaction; on PostgreSQL an advisory lock per offer makes
        replicas count and insert one at a time (the in-process ``_admit`` lock covers one).
        """
        if offer.max_instances <= 0:
            return ""
        pg_advisory(conn, f"admit-{offer.provider}/{offer.region}/{offer.zone}/{offer.instance_type}")
        live = conn.execute(
            select(instances.c.node_id).where(
                instances.c.provider == offer.provider,
                instances.c.region == offer.region,
                instances.c.zone == offer.zone,
                instances.c.instance_type == offer.instance_type,
                instances.c.state != InstanceState.TERMINATED.value,
            )
        ).all()
        if len(live) >= offer.max_instances:
            return (
                f"offer {offer.provider}/{offer.region}/{offer.instance_type} allows at most "
                f"{offer.max_instances} instance(s) and {len(live)} exist"
            )
        return ""

    def terminate(self, request_id: str, node_id: str) -> Operation:
        """Start terminating the instance of ``node_id``. Idempotent on request_id; an
        instance that is already terminated yields an operation that is already DONE.
        """
        return self._instance_op(request_id, node_id, OperationKind.TERMINATE)

    def stop_instance(self, request_id: str, node_id: str) -> Operation:
        """Start stopping the instance of ``node_id`` (providers declaring ``stop_start``)."""
        return self._instance_op(request_id, node_id, OperationKind.STOP)

    def start_instance(self, request_id: str, node_id: str) -> Operation:
        """Start a stopped instance of ``node_id`` again."""
        return self._instance_op(request_id, node_id, OperationKind.START)

    def _instance_op(self, request_id: str, node_id: str, kind: OperationKind) -> Operation:
        if not request_id:
            raise InvalidArgument(f"request_id: required; send a unique id (a UUID) per {kind.value}")
        existing = self._op_by_request(request_id)
        if existing is not None:
            return self._same_request(existing, kind, node_id)
        if not node_id:
            raise InvalidArgument("node_id: required")
        row = self._instance_row(node_id)
        if row is None:
            raise NotFound(f"node_id: the provisioner has no instance for node {node_id!r}")
        if kind is not OperationKind.TERMINATE:
            provider = self._providers.get(row["provider"])
            if provider is None or not capabilities_of(provider).stop_start:
                raise FailedPrecondition(
                    f"provider {row['provider']!r} cannot {kind.value} instances; `sky down` terminates them"
                )
            if row["state"] == InstanceState.TERMINATED.value:
                raise FailedPrecondition(f"node {node_id!r} is terminated; it cannot be {kind.value}ed")
        wanted = {
            OperationKind.TERMINATE: InstanceState.TERMINATED,
            OperationKind.STOP: InstanceState.STOPPED,
            OperationKind.START: InstanceState.RUNNING,
        }[kind]
        done = row["state"] == wanted.value
        t = self._clock.now()
        op_id = new_id("op")
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(operations).values(
                        operation_id=op_id,
                        request_id=request_id,
                        kind=kind.value,
                        state=(OperationState.DONE if done else OperationState.PENDING).value,
                        node_id=node_id,
                        error_kind="",
                        error_message="",
                        created_at=t,
                        updated_at=t,
                    )
                )
        except IntegrityError:
            existing = self._op_by_request(request_id)
            if existing is None:
                raise
            return self._same_request(existing, kind, node_id)
        if not done:
            self._spawn(op_id, kind)
        self._notify()
        return self.get_operation(op_id)

    def _same_request(self, op: Operation, kind: OperationKind, node_id: str) -> Operation:
        if op.kind != kind or (node_id and op.node_id != node_id):
            raise InvalidArgument(
                f"request_id: already used for a {op.kind.value} of node {op.node_id!r}; "
                "use a new request_id for a different request"
            )
        return op

    def watch_operation(
        self, operation_id: str, is_active: Callable[[], bool] = lambda: True, poll_s: float = 1.0
    ) -> Iterator[Operation]:
        """Yield the operation now and after each change, until it is DONE or FAILED.

        Changes made by this process wake the watcher at once; ``poll_s`` bounds the wait
        for changes made by another replica sharing the store, and for ``is_active`` (the
        client hanging up) to be noticed.
        """
        last: tuple[str, float] | None = None
        while True:
            op = self.get_operation(operation_id)
            marker = (op.state.value, op.updated_at)
            if marker != last:
                last = marker
                yield op
            if op.state.terminal or self._stop.is_set() or not is_active():
                return
            with self._changed:
                self._changed.wait(poll_s)

    def list_instances(self, provider: str = "", include_terminated: bool = False) -> list[Instance]:
        """Instances, oldest first; TERMINATED ones only when asked."""
        query = select(instances).order_by(instances.c.created_at, instances.c.node_id)
        if provider:
            query = query.where(instances.c.provider == provider)
        if not include_terminated:
            query = query.where(instances.c.state != InstanceState.TERMINATED.value)
        with self._engine.connect() as conn:
            return [instance_from_row(row) for row in conn.execute(query).mappings()]
