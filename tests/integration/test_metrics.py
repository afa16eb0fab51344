"""Every service serves Prometheus metrics on --metrics-port: RPC counts and its own gauges."""

from __future__ import annotations

import os
import secrets
import urllib.request
from pathlib import Path

import grpc

from helpers import free_port, start_service
from styx.common.clients import open_channel
from styx.v1 import broker_pb2, broker_pb2_grpc, common_pb2


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def test_broker_metrics_count_rpcs_and_nodes(tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    env = {**os.environ, "STYX_TOKEN": token}
    metrics_port = free_port()
    args = ["--port", "0", "--db-url", f"sqlite:///{tmp_path}/broker.db", "--metrics-port", str(metrics_port)]
    broker = start_service("styx.broker", args, tmp_path, env=env)
    try:
        stub = broker_pb2_grpc.ResourceBrokerStub(open_channel(broker.endpoint, token))
        capacity = common_pb2.Capacity(cpus=4, memory_gib=8)
        stub.RegisterNode(
            broker_pb2.RegisterNodeRequest(request_id="r", node_id="n1", provider="local", capacity=capacity),
            timeout=10,
        )
        try:
            stub.GetNode(broker_pb2.GetNodeRequest(node_id="nope"), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        text = _scrape(metrics_port)
        assert 'styx_rpc_total{code="OK",method="/styx.v1.ResourceBroker/RegisterNode"} 1.0' in text
        assert 'styx_rpc_total{code="NOT_FOUND",method="/styx.v1.ResourceBroker/GetNode"} 1.0' in text
        assert 'styx_nodes{provider="local",state="READY"} 1.0' in text
        assert "styx_rpc_seconds_bucket" in text
    finally:
        broker.stop()
