"""The request-id log on SQLite and PostgreSQL: first record wins, other payloads refused, expiry."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData

from styx.common.clock import FakeClock
from styx.common.errors import AlreadyExists
from styx.common.idempotency import RETENTION_S, Found, RequestLog, request_table


@pytest.fixture
def log(engine_factory):
    engine = engine_factory("requests")
    metadata = MetaData()
    table = request_table(metadata, "test_requests")
    metadata.create_all(engine)
    clock = FakeClock()
    return RequestLog(engine, table, clock), clock


def test_first_record_wins_and_other_payloads_are_refused(log) -> None:
    requests, _ = log
    assert requests.lookup("/s/M", "r1", "d1") == Found()
    requests.record("/s/M", "r1", "d1", b"first")
    requests.record("/s/M", "r1", "d1", b"second")  # a concurrent duplicate: ignored
    assert requests.lookup("/s/M", "r1", "d1") == Found(repeat=True, replay=b"first")
    with pytest.raises(AlreadyExists) as err:
        requests.lookup("/s/M", "r1", "d2")
    assert err.value.reason == "REQUEST_ID_REUSED" and "r1" in err.value.message
    assert requests.lookup("/s/Other", "r1", "d2") == Found()  # ids are per method


def test_a_method_that_stores_no_response_is_still_a_repeat(log) -> None:
    requests, _ = log
    requests.record("/s/Join", "r1", "d1", None)
    assert requests.lookup("/s/Join", "r1", "d1") == Found(repeat=True, replay=None)


def test_records_expire_after_the_retention(log) -> None:
    requests, clock = log
    requests.record("/s/M", "r1", "d1", b"x")
    clock.advance(RETENTION_S - 1)
    assert requests.lookup("/s/M", "r1", "d1").repeat
    clock.advance(2)
    assert requests.lookup("/s/M", "r1", "d2") == Found()  # expired: the id is free again
    requests.record("/s/M", "r1", "d2", b"y")
    assert requests.lookup("/s/M", "r1", "d2") == Found(repeat=True, replay=b"y")


def test_concurrent_records_share_rounds_and_a_clash_keeps_the_first(log) -> None:
    """Records of concurrent calls are written in group-commit rounds; a duplicate id in
    the same round (two calls racing with one new id) must not lose the other records."""
    import threading

    requests, _ = log
    barrier = threading.Barrier(16)

    def call(i: int) -> None:
        barrier.wait()
        # Calls 0 and 1 race with the same id: one of them is stored, neither raises.
        requests.record("/s/M", "dup" if i < 2 else f"r{i}", "d", f"answer-{i}".encode())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in range(2, 16):
        assert requests.lookup("/s/M", f"r{i}", "d") == Found(repeat=True, replay=f"answer-{i}".encode())
    assert requests.lookup("/s/M", "dup", "d").replay in (b"answer-0", b"answer-1")
