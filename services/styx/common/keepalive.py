"""HTTP/2 keepalive of the control plane's servers and clients.

Servers accept client pings as often as every ``min_client_ping_s`` and never close a
connection for pinging too often (``grpc.http2.max_ping_strikes`` = 0): grpc-js, grpc-go
and grpc-java clients configured with keepalive (grpc-go and grpc-java clamp it to at
least 10 s) keep their WatchEvents / StreamLogs streams; gRPC's default server policy
(one ping per 5 minutes, two strikes) answered them with GOAWAY "too_many_pings", which
grpc-js reports as RESOURCE_EXHAUSTED. Servers also ping idle connections themselves
every ``ping_s``, so NAT boxes and load balancers do not drop a quiet stream, and a dead
peer is noticed within ``ping_s + timeout_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Keepalive:
    """Keepalive intervals in seconds (short ones in tests)."""

    ping_s: float = 60.0
    timeout_s: float = 20.0
    min_client_ping_s: float = 5.0

    def server_options(self) -> list[tuple[str, Any]]:
        """Channel arguments of a grpc.server."""
        return [
            ("grpc.keepalive_time_ms", int(self.ping_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.min_client_ping_s * 1000)),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.http2.max_pings_without_data", 0),
        ]

    def client_options(self) -> list[tuple[str, Any]]:
        """Channel arguments of a client channel: ping as often as the server permits at most."""
        return [
            ("grpc.keepalive_time_ms", int(max(self.ping_s / 2, self.min_client_ping_s) * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]


DEFAULT = Keepalive()
