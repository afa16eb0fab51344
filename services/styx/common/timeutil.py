"""Time helpers: wall-clock floats inside the services, protobuf Timestamps at the edges."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp


def now() -> float:
    """Seconds since the epoch, as stored in every table."""
    return time.time()


def to_timestamp(seconds: float | None) -> Timestamp | None:
    """Convert stored seconds to a Timestamp; None stays None (unset field)."""
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts
