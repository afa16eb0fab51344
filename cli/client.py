"""The CLI's gRPC client: one channel per service, deadlines on every call, errors mapped.

Imported only by commands that talk to the control plane (this module imports grpc).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc

from styx.common.clients import open_channel
from styx.common.status import error_from_rpc
from styx.v1 import scheduler_pb2_grpc
from styx_cli.config import Target
from styx_cli.errors import CliError, rpc_error_message

# Deadline of unary calls, seconds; STYX_TIMEOUT overrides (slow links, busy planes).
DEFAULT_TIMEOUT_S = float(os.environ.get("STYX_TIMEOUT", "15"))
# Streams that follow a task get this deadline and are then reopened at the last offset,
# so even a days-long `sky logs --follow` never holds a call without a deadline.
STREAM_DEADLINE_S = 600.0
# UNAVAILABLE is retried this many times: a service may be restarting, and every mutating
# call carries a request_id, so a retry never acts twice.
UNAVAILABLE_RETRIES = 2
# ABORTED: the same request_id is still being handled by another call; the retry gets its result.
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


def request_id() -> str:
    """A fresh idempotency key for one mutating call."""
    return str(uuid.uuid4())


class SchedulerClient:
    """Calls on the scheduler with deadlines, bounded retries and CLI-friendly errors."""

    service = "scheduler"

    def __init__(self, target: Target) -> None:
        self.target = target
        self.endpoint = target.scheduler
        self._channel = open_channel(target.scheduler, target.token, tls_ca=target.tls_ca, plaintext=target.plaintext)
        self.stub = scheduler_pb2_grpc.SchedulerStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, request: Any, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """Call unary ``method``; raise CliError on failure (after retrying UNAVAILABLE)."""
        fn = getattr(self.stub, method)
        for attempt in range(UNAVAILABLE_RETRIES + 1):
            try:
                return fn(request, timeout=timeout)
            except grpc.RpcError as err:
                if err.code() in _RETRIED and attempt < UNAVAILABLE_RETRIES:
                    # The server's RetryInfo says how long to wait; cap it, a CLI must stay snappy.
                    hint = error_from_rpc(err).retry_after_s
                    time.sleep(min(2.0, hint) if hint is not None else 0.3 * (attempt + 1))
                    continue
                raise self.error(err) from None
        raise AssertionError("unreachable")  # the loop either returns or raises

    def stream(self, method: str, request: Any, timeout: float = STREAM_DEADLINE_S) -> Iterator[Any]:
        """Iterate a server stream; gRPC errors other than DEADLINE_EXCEEDED become CliError.

        DEADLINE_EXCEEDED simply ends the iteration: callers that follow reopen the stream.
        """
        call = getattr(self.stub, method)(request, timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise self.error(err) from None
        finally:
            call.cancel()

    def error(self, err: grpc.RpcError) -> CliError:
        """Map a gRPC error of this client's calls to a CliError naming the service."""
        exc = error_from_rpc(err)
        return rpc_error_message(exc.code.name, exc.message, self.service, self.endpoint)
