"""The injectable clock: a fake clock moves only when advanced and wakes its waiters."""

from __future__ import annotations

import threading

from styx.common.clock import SYSTEM_CLOCK, Clock, FakeClock


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock(start=100.0)
    assert clock.now() == 100.0
    clock.advance(5)
    assert clock.now() == 105.0 and clock.monotonic() == 5.0


def test_fake_wait_returns_after_advance_past_the_deadline() -> None:
    clock = FakeClock()
    stop = threading.Event()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(clock.wait(stop, 30.0)))
    waiter.start()
    clock.advance(10)
    waiter.join(0.2)
    assert waiter.is_alive(), "woke before its deadline"
    clock.advance(25)
    waiter.join(5)
    assert woke == [False]


def test_fake_wait_returns_true_when_the_event_is_set() -> None:
    clock = FakeClock()
    stop = threading.Event()
    stop.set()
    assert clock.wait(stop, 3600) is True


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(SYSTEM_CLOCK, Clock) and isinstance(FakeClock(), Clock)
