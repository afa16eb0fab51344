"""Crash points for fault-injection tests: a kill -9 of this process at a named place.

``STYX_CRASH_AT=name[,name...]`` arms points: the first time the process reaches an armed
point it writes the point's name to ``STYX_CRASH_MARK`` (when set, so the test knows the
point was reached) and SIGKILLs itself: no cleanup, no flush, no finally blocks, exactly a
kill -9 from outside, but at a chosen instant. Unarmed (always, outside such tests), a
point costs one set lookup.
"""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(p.strip() for p in os.environ.get("STYX_CRASH_AT", "").split(",") if p.strip())


def crash_point(name: str) -> None:
    """Die here (SIGKILL) when ``name`` is armed in STYX_CRASH_AT."""
    if name not in _ARMED:
        return
    mark = os.environ.get("STYX_CRASH_MARK", "")
    if mark:
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(fd, f"{name}\n".encode())
        os.fsync(fd)
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
