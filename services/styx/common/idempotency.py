"""Request-id deduplication of mutating RPCs (AIP-155), in each service's own store.

The server interceptor wraps every unary method whose request has a ``request_id``:
``RequestLog.begin`` records (method, request_id, payload digest) before the handler
runs, ``finish`` stores the serialized response, ``forget`` drops the record of a call
that failed (a failed call may be retried as is). A repeat with the same payload gets the
stored response; a different payload is ALREADY_EXISTS; a repeat while the first call
still runs is ABORTED with RetryInfo, unless the first call's claim is older than
``takeover_s`` (its process died mid-call), then the repeat takes it over and acts.

Rows live in a table of the service's own metadata (``request_table``), so they outlive
restarts and are shared by replicas on one PostgreSQL; they are kept ``RETENTION_S``
(24 h) and pruned by whoever calls ``begin`` after a prune interval has passed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Float, LargeBinary, MetaData, String, Table, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.common.errors import Aborted, AlreadyExists

log = logging.getLogger(__name__)

RETENTION_S = 24 * 3600.0
PRUNE_EVERY_S = 600.0
# A claim this old belongs to a call whose process died (handlers finish within seconds;
# clients' deadlines are far shorter).
TAKEOVER_S = 120.0
RUNNING, DONE = "running", "done"


def request_table(metadata: MetaData, name: str) -> Table:
    """A service's request-id table (each service owns its own, in its own metadata)."""
    return Table(
        name,
        metadata,
        Column("method", String(128), primary_key=True),
        Column("request_id", String(128), primary_key=True),
        Column("digest", String(64), nullable=False),
        # "running" until the first call succeeded, then "done".
        Column("state", String(8), nullable=False),
        # The serialized response once done; NULL for methods that must not store it.
        Column("response", LargeBinary, nullable=True),
        Column("created_at", Float, nullable=False, index=True),
        Column("claimed_at", Float, nullable=False),
    )


def digest(method: str, payload: bytes) -> str:
    """What identifies a request's payload: SHA-256 of the method and the request minus its id."""
    return hashlib.sha256(method.encode() + b"\0" + payload).hexdigest()


@dataclass(frozen=True)
class Begun:
    """What ``begin`` found: ``replay`` holds the stored response of an earlier call
    (None: act, then ``finish``). ``repeat`` is True when an earlier call with the same
    payload succeeded (also for methods that store no response)."""

    replay: bytes | None = None
    repeat: bool = False


class RequestLog:
    """The request ids of one service's mutating calls, in ``table`` on ``engine``."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        clock: Clock = SYSTEM_CLOCK,
        retention_s: float = RETENTION_S,
        takeover_s: float = TAKEOVER_S,
    ) -> None:
        self._engine = engine
        self._table = table
        self._clock = clock
        self.retention_s = retention_s
        self.takeover_s = takeover_s
        self._pruned_at = float("-inf")

    def begin(self, method: str, request_id: str, payload_digest: str) -> Begun:
        """Claim ``request_id`` for this call, or say what an earlier call left.

        Raises AlreadyExists for a different payload and Aborted while the first call runs.
        """
        now = self._clock.now()
        self._maybe_prune(now)
        c = self._table.c
        row_values = {
            "method": method,
            "request_id": request_id,
            "digest": payload_digest,
            "state": RUNNING,
            "response": None,
            "created_at": now,
            "claimed_at": now,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(self._table).values(row_values))
            return Begun()
        except IntegrityError:
            pass
        key = and_(c.method == method, c.request_id == request_id)
        with self._engine.begin() as conn:
            row = conn.execute(select(self._table).where(key)).first()
            if row is None:  # pruned between the two statements: claim it afresh
                conn.execute(insert(self._table).values(row_values))
                return Begun()
            if row.created_at < now - self.retention_s:
                conn.execute(update(self._table).where(key).values(row_values))
                return Begun()
            if row.digest != payload_digest:
                raise AlreadyExists(
                    f"request_id: {request_id!r} was already used for a different {method.rsplit('/', 1)[-1]} "
                    "request; use a new request_id for a new request (repeat a request with the same payload)",
                    reason="REQUEST_ID_REUSED",
                    metadata={"request_id": request_id[:128], "method": method},
                )
            if row.state == DONE:
                return Begun(replay=None if row.response is None else bytes(row.response), repeat=True)
            if row.claimed_at >= now - self.takeover_s:
                raise Aborted(
                    f"request_id: {request_id!r} is still being handled by an earlier call; retry shortly",
                    reason="REQUEST_IN_PROGRESS",
                    metadata={"request_id": request_id[:128], "method": method},
                )
            taken = conn.execute(
                update(self._table).where(and_(key, c.claimed_at == row.claimed_at)).values(claimed_at=now)
            ).rowcount
        if not taken:
            raise Aborted(
                f"request_id: {request_id!r} is being handled by another call; retry shortly",
                reason="REQUEST_IN_PROGRESS",
            )
        log.info("took over request %s of %s from a call that never finished", request_id, method)
        return Begun()

    def finish(self, method: str, request_id: str, response: bytes | None) -> None:
        """Record the successful call's response (None: the method must not store it)."""
        c = self._table.c
        key = and_(c.method == method, c.request_id == request_id)
        with self._engine.begin() as conn:
            conn.execute(update(self._table).where(key).values(state=DONE, response=response))

    def forget(self, method: str, request_id: str) -> None:
        """Drop the claim of a call that failed, so a retry acts."""
        c = self._table.c
        with self._engine.begin() as conn:
            conn.execute(
                delete(self._table).where(and_(c.method == method, c.request_id == request_id, c.state == RUNNING))
            )

    def _maybe_prune(self, now: float) -> None:
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        with self._engine.begin() as conn:
            gone = conn.execute(delete(self._table).where(self._table.c.created_at < now - self.retention_s)).rowcount
        if gone:
            log.info("pruned %d request ids older than %.0f h", gone, self.retention_s / 3600)
