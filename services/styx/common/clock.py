"""The clock as a dependency: services take a ``Clock``; tests pass a ``FakeClock`` and step it.

Modelled on k8s.io/utils/clock: code that needs the time or needs to wait asks its clock,
never ``time.time()`` or ``time.sleep`` directly, so a test can advance time by an hour
without waiting for it and without races against the wall clock.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What a component needs from time: the current time and a wait that can be cut short."""

    def now(self) -> float:
        """Seconds since the epoch (wall clock), as stored in every table."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for measuring intervals."""
        ...

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """Wait until ``event`` is set or ``timeout_s`` of this clock's time passed.

        :return: True when the event was set (like ``threading.Event.wait``).
        """
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """``event.wait(timeout_s)``."""
        return event.wait(max(0.0, timeout_s))


class FakeClock:
    """A clock that moves only when told to (``advance``); thread-safe.

    ``wait`` returns as soon as the event is set or the fake time passes the deadline, so a
    background loop driven by this clock runs one pass per ``advance`` past its interval.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self._cond = threading.Condition()

    def now(self) -> float:
        """The fake wall-clock time."""
        with self._cond:
            return self._now

    def monotonic(self) -> float:
        """The fake monotonic time (starts at 0)."""
        with self._cond:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every waiter whose deadline passed."""
        if seconds < 0:
            raise ValueError("a clock never goes back")
        with self._cond:
            self._now += seconds
            self._mono += seconds
            self._cond.notify_all()

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """Block until ``event`` is set or fake time reaches now + ``timeout_s``."""
        with self._cond:
            deadline = self._mono + max(0.0, timeout_s)
            while not event.is_set() and self._mono < deadline:
                # Real-time slices only to notice the event; time itself moves by advance().
                self._cond.wait(0.01)
            return event.is_set()


#: The process-wide real clock, the default wherever a clock is optional.
SYSTEM_CLOCK: Clock = SystemClock()
