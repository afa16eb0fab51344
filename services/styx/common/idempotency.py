"""Request-id deduplication of mutating RPCs (AIP-155), in each service's own store.

The server interceptor wraps every unary method whose request has a ``request_id``:
``RequestLog.lookup`` finds what an earlier call with the id left (the stored response to
replay, or ALREADY_EXISTS when its payload digest differs), and after a successful call
``record`` stores (method, request_id, digest, response). A call that failed, or whose
process was killed mid-call, records nothing: its retry acts, which is what a client
retrying after UNAVAILABLE needs. Two calls with the same new id at the same moment may
both reach the handler; the first record wins, and the handlers whose effect must not
double are idempotent on their own keys (SubmitJob keeps the request id with the job,
clusters and nodes by name, cancellations by nature).

Rows live in a table of the service's own metadata (``request_table``), so they outlive
restarts and are shared by replicas on one PostgreSQL; they are kept ``RETENTION_S``
(24 h) and pruned by a lookup after a prune interval has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Engine,
    Float,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError

from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.common.errors import AlreadyExists
from styx.common.group_commit import GroupCommit

log = logging.getLogger(__name__)

RETENTION_S = 24 * 3600.0
PRUNE_EVERY_S = 600.0


def request_table(metadata: MetaData, name: str) -> Table:
    """A service's request-id table (each service owns its own, in its own metadata)."""
    return Table(
        name,
        metadata,
        Column("method", String(128), primary_key=True),
        Column("request_id", String(128), primary_key=True),
        Column("digest", String(64), nullable=False),
        # The serialized response; NULL for methods that must not store it (a secret in it).
        Column("response", LargeBinary, nullable=True),
        Column("created_at", Float, nullable=False, index=True),
    )


def digest(method: str, payload: bytes) -> str:
    """What identifies a request's payload: SHA-256 of the method and the request minus its id."""
    return hashlib.sha256(method.encode() + b"\0" + payload).hexdigest()


@dataclass(frozen=True)
class Found:
    """What ``lookup`` found: ``repeat`` when an earlier call with the same payload
    succeeded; ``replay`` its stored response (None when the method stores none)."""

    repeat: bool = False
    replay: bytes | None = None


class RequestLog:
    """The request ids of one service's mutating calls, in ``table`` on ``engine``."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        clock: Clock = SYSTEM_CLOCK,
        retention_s: float = RETENTION_S,
        digest_key: bytes = b"",
    ) -> None:
        # With a key, digests are HMACs: a store holding requests with secrets in them (the
        # scheduler's SubmitJob) then keeps nothing a guessed secret can be checked against.
        self._digest_key = digest_key
        self._engine = engine
        self._table = table
        self._clock = clock
        self.retention_s = retention_s
        self._pruned_at = float("-inf")
        # Concurrent calls' records share one transaction: one commit per mutating call
        # was a fifth of a busy scheduler's SubmitJob time, queued on SQLite's write lock.
        c = table.c
        # Built once: a statement built per call cost more than running it (every mutating RPC).
        self._lookup = select(c.digest, c.response, c.created_at).where(
            and_(c.method == bindparam("method"), c.request_id == bindparam("request_id"))
        )
        self._records: GroupCommit[dict[str, object], None] = GroupCommit(self._write_records)

    def digest(self, method: str, payload: bytes) -> str:
        """The stored identity of a payload: ``digest()``, or its HMAC under ``digest_key``."""
        if not self._digest_key:
            return digest(method, payload)
        return hmac.new(self._digest_key, method.encode() + b"\0" + payload, hashlib.sha256).hexdigest()

    def lookup(self, method: str, request_id: str, payload_digest: str) -> Found:
        """What an earlier successful call with ``request_id`` left; AlreadyExists when it
        had another payload."""
        now = self._clock.now()
        self._maybe_prune(now)
        with self._engine.connect() as conn:
            row = conn.execute(self._lookup, {"method": method, "request_id": request_id}).first()
        if row is None or row.created_at < now - self.retention_s:
            return Found()
        if row.digest != payload_digest:
            raise AlreadyExists(
                f"request_id: {request_id!r} was already used for a different {method.rsplit('/', 1)[-1]} "
                "request; use a new request_id for a new request (repeat a request with the same payload)",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": request_id[:128], "method": method},
            )
        return Found(repeat=True, replay=None if row.response is None else bytes(row.response))

    def record(self, method: str, request_id: str, payload_digest: str, response: bytes | None) -> None:
        """Store a successful call (the first record of an id wins; an expired one is replaced)."""
        values: dict[str, object] = {
            "method": method,
            "request_id": request_id,
            "digest": payload_digest,
            "response": response,
            "created_at": self._clock.now(),
        }
        self._records.run(values)

    def _write_records(self, rows: Sequence[dict[str, object]]) -> list[None]:
        """One round of records in one transaction; a clash (an id recorded meanwhile, or
        twice in the round) writes the round again one record per transaction."""
        c = self._table.c
        cutoff = self._clock.now() - self.retention_s
        try:
            with self._engine.begin() as conn:
                keys = tuple_(c.method, c.request_id).in_([(row["method"], row["request_id"]) for row in rows])
                conn.execute(delete(self._table).where(and_(keys, c.created_at < cutoff)))
                conn.execute(insert(self._table), list(rows))
        except IntegrityError:
            if len(rows) > 1:
                for row in rows:
                    self._write_records([row])
            else:
                row = rows[0]
                log.info("request %s of %s was recorded by a concurrent call first", row["request_id"], row["method"])
        return [None] * len(rows)

    def _maybe_prune(self, now: float) -> None:
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        with self._engine.begin() as conn:
            gone = conn.execute(delete(self._table).where(self._table.c.created_at < now - self.retention_s)).rowcount
        if gone:
            log.info("pruned %d request ids older than %.0f h", gone, self.retention_s / 3600)
