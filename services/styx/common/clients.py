"""gRPC channels to other Styx services, with the bearer token attached to every call."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from styx.common.config import TlsConfigError

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


def channel_credentials() -> grpc.ChannelCredentials | None:
    """TLS credentials from the environment; None for plaintext.

    ``STYX_TLS_CA``: PEM file of the CA that signed the services' certificates (a private
    CA); ``STYX_TLS=1``: TLS verified against the system's roots. ``STYX_TLS_SERVER_NAME``
    overrides the name checked against the certificate (when dialing an IP address).
    """
    ca = os.environ.get("STYX_TLS_CA", "")
    if ca:
        try:
            return grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
        except OSError as exc:
            raise TlsConfigError(f"STYX_TLS_CA: cannot read {ca}: {exc.strerror}") from None
    if os.environ.get("STYX_TLS", "") in ("1", "true", "yes"):
        return grpc.ssl_channel_credentials()
    return None


def open_channel(endpoint: str, token: str) -> grpc.Channel:
    """A channel to ``endpoint`` (host:port) sending ``token`` on each call; TLS when the
    environment asks for it (``channel_credentials``)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.enable_retries", 1),
    ]
    credentials = channel_credentials()
    if credentials is None:
        channel = grpc.insecure_channel(endpoint, options=options)
    else:
        if name := os.environ.get("STYX_TLS_SERVER_NAME", ""):
            options.append(("grpc.ssl_target_name_override", name))
        channel = grpc.secure_channel(endpoint, credentials, options=options)
    if not token:
        return channel
    return grpc.intercept_channel(channel, _TokenInterceptor(token))
