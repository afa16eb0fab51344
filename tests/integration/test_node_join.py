"""One-time join tokens against a real styx-broker process and a real styx-agent process.

A cloud VM's boot script carries a join token; the agent trades it once (JoinNode) for a
node token that it keeps, and the token left in the boot script opens nothing afterwards.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers import ServiceProcess, start_service, stop_process, wait_until
from styx.common.auth import mint_join_token, mint_node_token, node_of_token
from styx.common.clients import open_channel
from styx.v1 import broker_pb2, broker_pb2_grpc, common_pb2

TOKEN = "test-token-node-join"


@pytest.fixture
def broker(tmp_path: Path, styx_home: Path) -> Iterator[ServiceProcess]:
    env = dict(os.environ, STYX_TOKEN=TOKEN)
    db = f"sqlite:///{tmp_path / 'broker.db'}"
    service = start_service(
        "styx.broker", ["--port", "0", "--provisioner", "127.0.0.1:9", "--db-url", db], tmp_path, env
    )
    yield service
    assert service.stop() == 0, service.log_text()


def _stub(endpoint: str, token: str) -> broker_pb2_grpc.ResourceBrokerStub:
    return broker_pb2_grpc.ResourceBrokerStub(open_channel(endpoint, token))


def _start_agent(tmp_path: Path, endpoint: str, node: str, join_token: str) -> subprocess.Popen[bytes]:
    # What the boot script leaves the agent: the join token, not the shared token.
    env = {k: v for k, v in os.environ.items() if k != "STYX_TOKEN"}
    env.update(STYX_JOIN_TOKEN=join_token, STYX_HOME=str(tmp_path / "vm-home"))
    log = open(tmp_path / f"agent-{node}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "styx.agent", "--node-id", node, "--provider", "aws", "--scheduler", "127.0.0.1:9",
         "--broker", endpoint, "--cpus", "1", "--memory-gib", "1", "--work-dir", str(tmp_path / "work" / node),
         "--heartbeat-seconds", "0.3"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
    )  # fmt: skip


def _node_state(endpoint: str, node: str) -> int:
    try:
        return _stub(endpoint, TOKEN).GetNode(broker_pb2.GetNodeRequest(node_id=node), timeout=5).state
    except grpc.RpcError:
        return 0


def test_agent_joins_once_keeps_its_node_token_and_the_boot_copy_is_then_worthless(
    tmp_path: Path, broker: ServiceProcess
) -> None:
    join = mint_join_token(TOKEN, "node-j1")
    agent = _start_agent(tmp_path, broker.endpoint, "node-j1", join)
    try:
        wait_until(lambda: _node_state(broker.endpoint, "node-j1") == common_pb2.NODE_STATE_READY, timeout=20)
        saved = tmp_path / "work" / "node-j1" / "node-token"
        assert node_of_token(TOKEN, saved.read_text().strip()) == "node-j1"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        # Someone who read the boot script later: the join token is spent...
        with pytest.raises(grpc.RpcError) as err:
            _stub(broker.endpoint, join).JoinNode(
                broker_pb2.JoinNodeRequest(request_id="thief", node_id="node-j1"), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "already used" in str(err.value.details())
        # ...and opens nothing else.
        with pytest.raises(grpc.RpcError) as err:
            _stub(broker.endpoint, join).Heartbeat(broker_pb2.HeartbeatRequest(node_id="node-j1"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert stop_process(agent, timeout=15) == 0
    # A restart (reboot, stop/start) uses the kept node token: no second join needed.
    agent = _start_agent(tmp_path, broker.endpoint, "node-j1", join)
    try:
        wait_until(lambda: _node_state(broker.endpoint, "node-j1") == common_pb2.NODE_STATE_READY, timeout=20)
        assert agent.poll() is None
    finally:
        assert stop_process(agent, timeout=15) == 0
    log = (tmp_path / "agent-node-j1.log").read_text()
    assert join not in log and saved.read_text().strip() not in log


def test_a_spent_join_token_stops_a_second_agent_with_a_clear_error(tmp_path: Path, broker: ServiceProcess) -> None:
    join = mint_join_token(TOKEN, "node-j2")
    _stub(broker.endpoint, join).JoinNode(broker_pb2.JoinNodeRequest(request_id="first", node_id="node-j2"), timeout=5)
    agent = _start_agent(tmp_path, broker.endpoint, "node-j2", join)
    assert agent.wait(20) == 2
    assert "already used" in (tmp_path / "agent-node-j2.log").read_text()


def test_join_is_idempotent_on_request_id_and_bound_to_its_node(broker: ServiceProcess) -> None:
    join = mint_join_token(TOKEN, "node-j3")
    stub = _stub(broker.endpoint, join)
    first = stub.JoinNode(broker_pb2.JoinNodeRequest(request_id="r1", node_id="node-j3"), timeout=5)
    again = stub.JoinNode(broker_pb2.JoinNodeRequest(request_id="r1", node_id="node-j3"), timeout=5)
    assert first.node_token == again.node_token and node_of_token(TOKEN, first.node_token) == "node-j3"
    with pytest.raises(grpc.RpcError) as err:
        stub.JoinNode(broker_pb2.JoinNodeRequest(request_id="r2", node_id="node-other"), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "node_id" in str(err.value.details())


def test_a_node_token_speaks_only_for_its_own_node(broker: ServiceProcess) -> None:
    node_a = _stub(broker.endpoint, mint_node_token(TOKEN, "node-a"))
    request = broker_pb2.RegisterNodeRequest(
        request_id="reg-a", node_id="node-a", provider="aws", capacity=common_pb2.Capacity(cpus=1, memory_gib=1)
    )
    assert node_a.RegisterNode(request, timeout=5).node_id == "node-a"
    for call, req in (
        (node_a.Heartbeat, broker_pb2.HeartbeatRequest(node_id="node-b")),
        (node_a.DeregisterNode, broker_pb2.DeregisterNodeRequest(request_id="x", node_id="node-b")),
        (node_a.RegisterNode, broker_pb2.RegisterNodeRequest(request_id="y", node_id="node-b")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "node-a" in str(err.value.details()) and "node-b" in str(err.value.details())
    assert node_a.Heartbeat(broker_pb2.HeartbeatRequest(node_id="node-a"), timeout=5).known
