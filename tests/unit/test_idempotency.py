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
