"""Provisioner logic: operations and instances, backed by the provisioner's own tables.

``Provision`` and ``Terminate`` record an operation (idempotent on ``request_id``) and run
the provider call in a background thread, moving the operation PENDING -> RUNNING ->
DONE / FAILED; ``watch_operation`` follows those changes. A reconcile loop compares what
the store says with what each provider reports: an instance that vanished (a local agent
process that died) is marked TERMINATED, and a provider instance the store does not own
(a leak) is terminated. Unfinished operations found at start-up are resumed, which is
safe because providers' ``create`` is idempotent on the request id.

Replicas: any number of provisioners may share one store. An operation is run by the
replica that claims it (``owner``, ``lease_until``; a conditional UPDATE decides), which
renews the claim while it runs; a replica that dies leaves claims that expire, and the
others take those operations over. One replica at a time (the holder of the
"reconciler" lease) reaps leaks. Admission to an offer's ``max_instances`` counts and
inserts in one transaction, serialised across replicas on PostgreSQL.

No grpc here: the servicer converts messages, this module works on dataclasses.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from styx.common.faults import crash_point
from styx.common.ids import new_id
from styx.common.leases import Lease
from styx.common.migrations import upgrade
from styx.common.store import pg_advisory
from styx.provider import (
    PLANE_LABEL,
    AgentLaunch,
    CatalogSource,
    InstanceStatus,
    Offer,
    PowerControl,
    Provider,
    ProviderError,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
    capabilities_of,
)
from styx.provisioner.tables import instances, leases, operations, settings

log = logging.getLogger(__name__)

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class OperationKind(enum.Enum):
    """What an operation does."""

    PROVISION = "provision"
    TERMINATE = "terminate"
    STOP = "stop"
    START = "start"


class OperationState(enum.Enum):
    """Lifecycle of an operation; DONE and FAILED are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True for DONE and FAILED."""
        return self in (OperationState.DONE, OperationState.FAILED)


class InstanceState(enum.Enum):
    """Lifecycle of an instance as the provisioner records it."""

    PENDING = "pending"
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Instance:
    """An instance the provisioner created (or is creating) for a node."""

    node_id: str
    provider: str
    instance_id: str
    offer: Offer
    state: InstanceState
    spot: bool
    labels: Mapping[str, str]
    created_at: float


@dataclass(frozen=True)
class Operation:
    """A provision or terminate action and where it stands."""

    operation_id: str
    request_id: str
    kind: OperationKind
    state: OperationState
    node_id: str
    created_at: float
    updated_at: float
    instance: Instance | None = None
    error_kind: ProviderErrorKind | None = None
    error_message: str = ""


@dataclass(frozen=True)
class ProviderInfo:
    """A loaded provider and whether it is usable."""

    name: str
    enabled: bool
    reason: str = ""
    hint: str = ""
    #: The capabilities the provider declares (``Capabilities.names()``), e.g. ("spot",).
    capabilities: tuple[str, ...] = ()


@dataclass
class _Worker:
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Provisioner:
    """Owns instances: records operations and drives providers to carry them out."""

    def __init__(
        self,
        engine: Engine,
        providers: Mapping[str, Provider],
        agent_launch: AgentLaunch,
        reconcile_interval_s: float = 3.0,
        leak_grace_s: float = 60.0,
        on_instance_gone: Callable[[str, str], None] | None = None,
        plane_id: str = "",
        replica_id: str = "",
        op_lease_s: float = 15.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._engine = engine
        self._clock = clock
        # Who runs which operation; stable across restarts of one replica (the same id
        # takes its own unfinished operations back at once), unique among replicas.
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self._op_lease_s = op_lease_s
        self._reconcile_lease = Lease(
            engine, leases, "reconciler", self.replica_id, max(3 * reconcile_interval_s, 3.0), clock
        )
        if plane_id and not PLANE_ID.match(plane_id):
            raise InvalidArgument(f"plane_id: {plane_id!r} must be 1-40 lowercase letters, digits or '-'")
        # Owner label of this control plane's instances; kept in the store when not given.
        self.plane_id = plane_id
        self._foreign_seen: set[str] = set()
        self._providers = dict(providers)
        self._launch = agent_launch
        self._interval = reconcile_interval_s
        # An unowned instance is terminated only once seen unowned for this long, so an
        # instance another replica is creating right now is never mistaken for a leak.
        self._leak_grace_s = leak_grace_s
        self._unowned_since: dict[str, float] = {}
        # Told (node_id, reason) when a node's instance vanished, so its work is re-queued now.
        self._on_instance_gone = on_instance_gone
        self._status: dict[str, ProviderStatus] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._workers = _Worker()
        # Serialises "count live instances, then insert" so max_instances holds in-process.
        self._admit = threading.Lock()
        # One lock per node so a terminate waits for that node's create to finish.
        self._node_locks: dict[str, threading.Lock] = {}
        self._node_locks_guard = threading.Lock()
        self._reconciler: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self, reconcile: bool = True) -> None:
        """Create tables, check providers, resume unfinished operations, start reconciling."""
        upgrade(self._engine, "provisioner")
        self.plane_id = self._settle_plane_id(self.plane_id)
        self.refresh_status()
        self.take_over()
        threading.Thread(target=self._keep_claims, name="prov-claims", daemon=True).start()
        if reconcile:
            self._reconciler = threading.Thread(target=self._reconcile_loop, name="prov-reconcile", daemon=True)
            self._reconciler.start()

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

    def _settle_plane_id(self, wanted: str) -> str:
        """The plane id: ``wanted`` when given (and then kept), else the stored one, else a
        new random one, stored so that restarts and replicas on one store agree."""
        with self._engine.begin() as conn:
            stored = conn.execute(select(settings.c.value).where(settings.c.name == "plane_id")).scalar()
            if stored and (not wanted or wanted == stored):
                return str(stored)
            value = wanted or f"plane-{new_id('x')[-12:].lower()}"
            if stored:
                log.warning("plane id changed from %s to %s: instances labelled %s are no longer reaped here",
                            stored, value, stored)  # fmt: skip
                conn.execute(update(settings).where(settings.c.name == "plane_id").values(value=value))
            else:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(settings).values(name="plane_id", value=value))
                except IntegrityError:  # a replica stored one first: use it
                    return str(conn.execute(select(settings.c.value).where(settings.c.name == "plane_id")).scalar())
            return value

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the reconcile loop and wait briefly for in-flight provider calls."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._reconciler is not None:
            self._reconciler.join(timeout_s)
        self._reconcile_lease.release()
        with self._workers.lock:
            threads = list(self._workers.threads.values())
        for thread in threads:
            thread.join(timeout_s)
        with self._workers.lock:
            unfinished = list(self._workers.threads)
        if unfinished:
            # Hand the rest back: another replica (or this one restarted) resumes them now.
            try:
                with self._engine.begin() as conn:
                    conn.execute(
                        update(operations)
                        .where(operations.c.operation_id.in_(unfinished), operations.c.owner == self.replica_id)
                        .values(lease_until=0.0)
                    )
            except Exception as exc:
                log.warning("could not hand operations back; their claims expire by themselves: %s", exc)

    # -- providers and offers --------------------------------------------------------------

    def refresh_status(self) -> None:
        """Ask every provider whether it is usable; a check that raises means disabled."""
        for name, provider in self._providers.items():
            try:
                status = provider.check()
            except Exception as exc:
                log.warning("provider %s check() raised", name, exc_info=exc)
                status = ProviderStatus(False, f"check() raised {type(exc).__name__}", "see the provisioner log")
            self._status[name] = status

    def list_providers(self) -> list[ProviderInfo]:
        """Every loaded provider with its status, sorted by name."""
        out = []
        for name in sorted(self._providers):
            status = self._status.get(name) or ProviderStatus(False, "not checked yet")
            caps = tuple(capabilities_of(self._providers[name]).names())
            out.append(ProviderInfo(name, status.enabled, status.reason, status.hint, caps))
        return out

    def list_offers(self, provider: str = "") -> list[Offer]:
        """Offers of one provider (``provider``) or of every enabled provider."""
        if provider:
            self._enabled_provider(provider, "provider")
            names = [provider]
        else:
            names = [n for n in sorted(self._providers) if self._status.get(n, ProviderStatus(False)).enabled]
        offers: list[Offer] = []
        for name in names:
            try:
                offers.extend(o for o in self._providers[name].offers() if o.provider == name)
            except Exception as exc:
                # One broken provider must not hide the others' offers from the broker.
                log.warning("provider %s offers() raised", name, exc_info=exc)
        return sorted(offers, key=lambda o: o.key)

    def provider_catalog(self, name: str, regions: Sequence[str] = ()) -> list[Offer]:
        """A provider's catalog from its cloud's own APIs (providers declaring ``catalog``)."""
        provider = self._enabled_provider(name, "provider")
        if not capabilities_of(provider).catalog:
            raise FailedPrecondition(
                f"provider {name!r} cannot list its catalog from the cloud; use `sky catalog import` instead"
            )
        source = cast(CatalogSource, provider)  # the loader checked the declared operation exists
        try:
            offers = source.catalog(list(regions) or None)
        except Exception as exc:
            kind, message = _describe_failure(name, exc)
            if kind in (ProviderErrorKind.AUTH, ProviderErrorKind.INVALID):
                raise FailedPrecondition(f"provider {name!r}: {message}") from exc
            raise Unavailable(f"provider {name!r}: {message}") from exc
        return sorted(offers, key=lambda o: o.key)

    def _enabled_provider(self, name: str, field_name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            known = ", ".join(sorted(self._providers)) or "none"
            raise InvalidArgument(f"{field_name}: unknown provider {name!r}; loaded providers: {known}")
        status = self._status.get(name) or ProviderStatus(False, "not checked yet")
        if not status.enabled:
            hint = f" ({status.hint})" if status.hint else ""
            raise FailedPrecondition(f"provider {name!r} is disabled: {status.reason}{hint}")
        return provider

    def _resolve_offer(self, provider: Provider, wanted: Offer) -> Offer:
        listed = provider.offers()
        if not listed:
            # Cloud providers list no offers here: their catalog lives in the broker, and the
            # cloud itself refuses an instance type it does not have (an INVALID error).
            return wanted
        candidates = [o for o in listed if o.instance_type == wanted.instance_type]
        if wanted.region:
            candidates = [o for o in candidates if o.region == wanted.region]
        if wanted.zone:
            candidates = [o for o in candidates if o.zone == wanted.zone]
        if not candidates:
            place = "/".join(p for p in (wanted.provider, wanted.region, wanted.zone) if p)
            raise InvalidArgument(
                f"offer: provider {wanted.provider!r} has no instance type {wanted.instance_type!r} in "
                f"{place}; pick one from ListOffers"
            )
        # The provider's own offer is authoritative (price, size, limits), not the caller's copy.
        return candidates[0]

    # -- operations --------------------------------------------------------------------------

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
        _check_node_id(node_id)
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

    def get_operation(self, operation_id: str) -> Operation:
        """The operation's current state. NotFound when unknown."""
        if not operation_id:
            raise InvalidArgument("operation_id: required")
        with self._engine.connect() as conn:
            row = conn.execute(select(operations).where(operations.c.operation_id == operation_id)).mappings().first()
            if row is None:
                raise NotFound(f"operation_id: no operation {operation_id!r}")
            return self._op_from_row(conn, row)

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
            return [_instance_from_row(row) for row in conn.execute(query).mappings()]

    # -- workers ---------------------------------------------------------------------------

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

    def _node_lock(self, node_id: str) -> threading.Lock:
        with self._node_locks_guard:
            return self._node_locks.setdefault(node_id, threading.Lock())

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
            inst = _instance_from_row(row)
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
                kind, message = _describe_failure(inst.provider, exc)
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
            inst = _instance_from_row(row)
            provider = self._providers.get(inst.provider)
            if provider is None:
                self._finish(op_id, ProviderErrorKind.INVALID, f"provider {inst.provider!r} is not loaded")
                return
            self._set_instance(op.node_id, InstanceState.TERMINATING)
            try:
                provider.terminate(inst.instance_id)
            except Exception as exc:
                kind, message = _describe_failure(inst.provider, exc)
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
            inst = _instance_from_row(row)
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
                kind, message = _describe_failure(inst.provider, exc)
                self._finish(op_id, kind, message)
                return
            self._set_instance(op.node_id, InstanceState.STOPPED if stopping else InstanceState.RUNNING)
            done = "instance stopped" if stopping else "instance started"
            log.info(done, extra={"node_id": op.node_id, "instance_id": inst.instance_id})
            self._finish(op_id)

    # -- reconcile -------------------------------------------------------------------------

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

    # -- store helpers ---------------------------------------------------------------------

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
            instance = _instance_from_row(inst_row)
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


# Plane ids become GCE label values and EC2/Azure tag values: keep to the strictest (GCE).
PLANE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def _check_node_id(node_id: str) -> None:
    if not node_id:
        raise InvalidArgument("node_id: required; the id the new node's agent registers as")
    if not _NODE_ID.match(node_id):
        # Node ids end up in file names and command lines, so keep them to a safe alphabet.
        raise InvalidArgument(
            f"node_id: {node_id!r} is not valid; use 1-63 characters of letters, digits, '.', '_', '-', "
            "starting with a letter or digit"
        )


def _describe_failure(provider: str, exc: Exception) -> tuple[ProviderErrorKind, str]:
    if isinstance(exc, ProviderError):
        return exc.kind, exc.message
    ref = new_id("err")
    log.error("provider %s raised an unexpected error", provider, exc_info=exc, extra={"ref": ref})
    # Unexpected errors may carry anything (paths, credentials): only the reference leaves.
    return ProviderErrorKind.INTERNAL, f"provider {provider} failed unexpectedly (reference {ref}); see the log"


def _instance_from_row(row: Mapping[Any, Any]) -> Instance:
    offer = Offer(**json.loads(str(row["offer_json"])))
    return Instance(
        node_id=str(row["node_id"]),
        provider=str(row["provider"]),
        instance_id=str(row["instance_id"] or ""),
        offer=offer,
        state=InstanceState(row["state"]),
        spot=bool(row["spot"]),
        labels=json.loads(str(row["labels_json"] or "{}")),
        created_at=float(row["created_at"]),
    )
