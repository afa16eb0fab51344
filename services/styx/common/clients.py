"""gRPC channels to other Styx services, with the bearer token attached to every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

# Deadline for unary calls between services; streams set their own.
DEFAULT_TIMEOUT_S = 10.0


class _TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._pair = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._pair]
        # grpc hands interceptors a namedtuple, so _replace keeps every other field.
        return details._replace(metadata=metadata)  # type: ignore[attr-defined]

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def open_channel(endpoint: str, token: str) -> grpc.Channel:
    """An insecure channel to ``endpoint`` (host:port) sending ``token`` on each call."""
    channel = grpc.insecure_channel(
        endpoint,
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.enable_retries", 1)],
    )
    if not token:
        return channel
    return grpc.intercept_channel(channel, _TokenInterceptor(token))
