"""Clients of replicated services: several endpoints, calls keep working while one replica is gone."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from styx.common.clients import open_channel, split_endpoints


class _Counting(health.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def Check(self, request, context):
        self.calls += 1
        return super().Check(request, context)


def _replica() -> tuple[grpc.Server, int, _Counting]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = _Counting()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, servicer


def test_calls_are_spread_over_replicas_and_go_on_while_one_is_down() -> None:
    (a, pa, ca), (b, pb, cb) = _replica(), _replica()
    channel = open_channel(f"127.0.0.1:{pa}, localhost:{pb}", "")
    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        for _ in range(10):
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving
        assert ca.calls and cb.calls, f"calls not spread over the replicas: {ca.calls} and {cb.calls}"
        a.stop(None).wait()
        before_a, before_b = ca.calls, cb.calls
        for _ in range(10):
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == serving
        assert (ca.calls, cb.calls) == (before_a, before_b + 10)  # every call went to the live replica
    finally:
        channel.close()
        b.stop(None)


def test_malformed_endpoint_lists_are_refused_with_the_culprit() -> None:
    with pytest.raises(ValueError, match="'nohost' is not host:port"):
        split_endpoints("127.0.0.1:1,nohost")
    assert split_endpoints(" a:1 ,b:2,") == ["a:1", "b:2"]
