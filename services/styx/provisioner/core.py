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

The parts, each a layer of ``Provisioner`` with one job (imports point down only):
``operations`` (requests), ``reconcile``, over ``workers`` (claims and provider calls),
``provider_access`` and ``records`` (shared state, store rows); ``model`` holds the
types. No grpc here: the servicer converts messages, these modules work on dataclasses.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

from sqlalchemy import (
    Engine,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.common.errors import InvalidArgument
from styx.common.ids import new_id
from styx.common.leases import Lease
from styx.common.migrations import upgrade
from styx.provider import (
    AgentLaunch,
    Provider,
    ProviderStatus,
)
from styx.provisioner.model import (
    PLANE_ID,
    Instance,
    InstanceState,
    Operation,
    OperationKind,
    OperationState,
    ProviderInfo,
    WorkerThreads,
)
from styx.provisioner.operations import Operations
from styx.provisioner.reconcile import Reconciler
from styx.provisioner.tables import leases, operations, settings

__all__ = [
    "PLANE_ID",
    "Instance",
    "InstanceState",
    "Operation",
    "OperationKind",
    "OperationState",
    "ProviderInfo",
    "Provisioner",
]

log = logging.getLogger(__name__)


class Provisioner(Operations, Reconciler):
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
        self._workers = WorkerThreads()
        # Serialises "count live instances, then insert" so max_instances holds in-process.
        self._admit = threading.Lock()
        # One lock per node so a terminate waits for that node's create to finish.
        self._node_locks: dict[str, threading.Lock] = {}
        self._node_locks_guard = threading.Lock()
        self._reconciler: threading.Thread | None = None

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
