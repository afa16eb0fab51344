"""Named leases in a service's own table: one replica at a time holds a role until it expires.

A lease row (name, holder, expires_at) is taken or renewed with one conditional UPDATE,
which works the same on SQLite and PostgreSQL, needs no transaction held across the work
it guards, and expires by itself when its holder dies. Holders renew on their own
schedule (``keep``), every third of the TTL, so one slow pass of work never loses it.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from styx.common.clock import Clock

log = logging.getLogger(__name__)


def lease_table(metadata: MetaData, name: str) -> Table:
    """A service's lease table (each service owns its own, in its own metadata)."""
    return Table(
        name,
        metadata,
        Column("name", String(32), primary_key=True),
        Column("holder", String(64), nullable=False),
        Column("expires_at", Float, nullable=False),
    )


class Lease:
    """The lease ``name`` in ``table`` (columns name, holder, expires_at) for ``holder``."""

    def __init__(self, engine: Engine, table: Table, name: str, holder: str, ttl_s: float, clock: Clock) -> None:
        if ttl_s <= 0:
            raise ValueError("a lease needs a positive TTL")
        self._engine = engine
        self._table = table
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        self._clock = clock
        self._until = 0.0
        self._released = False

    def hold(self) -> bool:
        """True while this holder owns the lease (taken or renewed now when due)."""
        if self._released:
            return False
        stamp = self._clock.now()
        if stamp < self._until - self.ttl_s * 2 / 3:
            return True
        c = self._table.c
        until = stamp + self.ttl_s
        with self._engine.begin() as conn:
            taken = conn.execute(
                update(self._table)
                .where(and_(c.name == self.name, or_(c.holder == self.holder, c.expires_at < stamp)))
                .values(holder=self.holder, expires_at=until)
            ).rowcount
        if not taken and not self._exists():
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(self._table).values(name=self.name, holder=self.holder, expires_at=until))
                taken = 1
            except IntegrityError:
                taken = 0  # another holder created it first
        if taken and not self._until:
            log.info("lease taken", extra={"lease": self.name, "holder": self.holder})
        self._until = until if taken else 0.0
        return bool(taken)

    def _exists(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(self._table.c.name).where(self._table.c.name == self.name)).first() is not None

    def keep(self, stop: threading.Event) -> None:
        """Renew every third of the TTL until ``stop`` is set (run in a thread of its own)."""
        while not stop.is_set():
            try:
                self.hold()
            except Exception as exc:
                log.warning("lease %s renewal failed; retrying: %s", self.name, exc)
            self._clock.wait(stop, self.ttl_s / 3)

    def release(self) -> None:
        """Give the lease up at once, so a successor takes over without waiting for expiry."""
        self._released = True
        if not self._until:
            return
        self._until = 0.0
        c = self._table.c
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    update(self._table).where(and_(c.name == self.name, c.holder == self.holder)).values(expires_at=0.0)
                )
        except Exception as exc:
            log.warning("could not release lease %s; it expires by itself: %s", self.name, exc)
