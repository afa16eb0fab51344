"""The broker's lock: one thread at a time in this process, one replica at a time on PostgreSQL.

Every broker replica keeps the same in-memory view (nodes, allocations, provisions,
clusters) of the shared store. On PostgreSQL the lock is also a session advisory lock,
taken on a connection of its own, so changes of different replicas never interleave, and
a counter (``broker_epoch``) says whether another replica changed the store since this
one last held the lock: if so, the view is reloaded before anything reads it. Leaving a
``changing`` section bumps the counter; leaving a ``reading`` one does not. SQLite has
one broker process, so there the lock is just the in-process one.

Nothing is sent to the provisioner while the lock is held (see provisioning.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from styx.broker import tables as t
from styx.common.store import pg_advisory

log = logging.getLogger(__name__)

_KEY = "broker-view"


class ViewLock:
    """Re-entrant; ``with lock:`` is a changing section, ``with lock.reading():`` a reading one."""

    def __init__(self, engine: Engine, reload: Callable[[], None]) -> None:
        self._engine = engine
        self._reload = reload
        self._local = threading.RLock()
        self._depth = 0
        self._dirty = False
        self._shared = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._epoch: int | None = None

    @property
    def shared(self) -> bool:
        """Whether replicas may share the store (PostgreSQL)."""
        return self._shared

    def __enter__(self) -> ViewLock:
        self._acquire(changing=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A section that only reads the view (it is still brought up to date first)."""
        self._acquire(changing=False)
        try:
            yield
        finally:
            self._release()

    def _acquire(self, changing: bool) -> None:
        self._local.acquire()
        self._depth += 1
        self._dirty = self._dirty or changing
        if self._depth > 1 or not self._shared:
            return
        try:
            conn = self._connection()
            pg_advisory(conn, _KEY, scope="session")
            epoch = conn.execute(select(t.epoch.c.value).where(t.epoch.c.name == "view")).scalar_one()
            if epoch != self._epoch:
                # Another replica changed the store (or this one lost track: first use, a
                # dropped connection): read it again before anything looks at the view.
                self._reload()
                self._epoch = epoch
        except BaseException:
            self._drop_connection()
            self._depth -= 1
            self._dirty = False
            self._local.release()
            raise

    def _release(self) -> None:
        try:
            if self._depth == 1 and self._shared and self._conn is not None:
                try:
                    if self._dirty:
                        self._epoch = self._conn.execute(
                            update(t.epoch)
                            .where(t.epoch.c.name == "view")
                            .values(value=t.epoch.c.value + 1)
                            .returning(t.epoch.c.value)
                        ).scalar_one()
                    pg_advisory(self._conn, _KEY, scope="session", unlock=True)
                except Exception:
                    # A lost connection drops its advisory lock with it; others reload anyway.
                    self._epoch = None
                    self._drop_connection()
                    raise
        finally:
            if self._depth == 1:
                self._dirty = False
            self._depth -= 1
            self._local.release()

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:
                log.debug("closing the lock connection: %s", exc)
            self._conn = None
