"""gRPC channels to other Styx services, with the bearer token attached to every call."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from styx.common.config import TlsConfigError
from styx.common.keepalive import DEFAULT as DEFAULT_KEEPALIVE
from styx.common.keepalive import Keepalive

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


def channel_credentials(tls_ca: str = "") -> grpc.ChannelCredentials | None:
    """TLS credentials from ``tls_ca`` or the environment; None for plaintext.

    ``tls_ca`` (else ``STYX_TLS_CA``): PEM file of the CA that signed the services'
    certificates (a private CA, e.g. the local plane's); ``STYX_TLS=1``: TLS verified
    against the system's roots. ``STYX_TLS_SERVER_NAME`` overrides the name checked
    against the certificate (when dialing an IP address).
    """
    ca = tls_ca or os.environ.get("STYX_TLS_CA", "")
    if ca:
        try:
            return grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
        except OSError as exc:
            raise TlsConfigError(f"STYX_TLS_CA: cannot read {ca}: {exc.strerror}") from None
    if os.environ.get("STYX_TLS", "") in ("1", "true", "yes"):
        return grpc.ssl_channel_credentials()
    return None


# Several endpoints (replicas of one service): spread calls over the ready ones and retry
# a call that found a replica gone (UNAVAILABLE) on another. Retrying is safe because every
# mutating RPC is idempotent on its request id.
_REPLICAS_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def split_endpoints(spec: str) -> list[str]:
    """``host:port[,host:port...]`` -> the endpoints; ValueError names a malformed one."""
    endpoints = [e.strip() for e in spec.split(",") if e.strip()]
    if not endpoints:
        raise ValueError("endpoint: empty; give host:port, or several separated by commas")
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"endpoint: {endpoint!r} is not host:port")
    return endpoints


def _replicas_target(endpoints: list[str]) -> str:
    """One gRPC target naming every replica's address (resolved now; gRPC's ipv4:/ipv6: schemes)."""
    v4: list[str] = []
    v6: list[str] = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        for family, *_, sockaddr in socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP):
            if family == socket.AF_INET:
                v4.append(f"{sockaddr[0]}:{port}")
            elif family == socket.AF_INET6:
                v6.append(f"[{sockaddr[0]}]:{port}")
    if v4:
        return "ipv4:" + ",".join(dict.fromkeys(v4))
    return "ipv6:" + ",".join(dict.fromkeys(v6))


def open_channel(
    endpoint: str,
    token: str,
    keepalive: Keepalive = DEFAULT_KEEPALIVE,
    tls_ca: str = "",
    plaintext: bool = False,
) -> grpc.Channel:
    """A channel to ``endpoint`` (host:port, or several comma-separated replicas) sending
    ``token`` on each call (trimmed: a token file's newline is no part of it); TLS when
    ``tls_ca`` names a CA file or the environment asks for it (``channel_credentials``),
    unless ``plaintext`` (a peer known to serve plaintext); keepalive pings per ``keepalive``."""
    token = token.strip()
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.enable_retries", 1),
        *keepalive.client_options(),
    ]
    target = endpoint
    endpoints = split_endpoints(endpoint) if "," in endpoint else [endpoint]
    if len(endpoints) > 1:
        target = _replicas_target(endpoints)
        options.append(("grpc.service_config", _REPLICAS_SERVICE_CONFIG))
    credentials = None if plaintext else channel_credentials(tls_ca)
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        name = os.environ.get("STYX_TLS_SERVER_NAME", "")
        if not name and len(endpoints) > 1:
            name = endpoints[0].rpartition(":")[0].strip("[]")  # the certificate names the host, not its IPs
        if name:
            options.append(("grpc.ssl_target_name_override", name))
        channel = grpc.secure_channel(target, credentials, options=options)
    if not token:
        return channel
    return grpc.intercept_channel(channel, _TokenInterceptor(token))
