"""styx-provisioner as a real process: auth, health, providers, offers, local instances."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import ServiceProcess, pid_alive, start_service, wait_until
from styx.agent import hardware
from styx.common.clients import open_channel
from styx.v1 import common_pb2, provisioner_pb2, provisioner_pb2_grpc

TOKEN = "test-token-provisioner"


@pytest.fixture
def provisioner(tmp_path: Path, styx_home: Path) -> Iterator[ServiceProcess]:
    env = dict(os.environ, STYX_TOKEN=TOKEN, STYX_LOCAL_NODE_CPUS="1", STYX_LOCAL_NODE_MEMORY_GIB="0.5")
    # Agents it starts dial unreachable endpoints: these tests only look at the processes.
    service = start_service(
        "styx.provisioner",
        ["--port", "0", "--scheduler", "127.0.0.1:9", "--broker", "127.0.0.1:9", "--reconcile-seconds", "0.3"],
        tmp_path / "run",
        env=env,
    )
    yield service
    _terminate_all(service)
    assert service.stop() == 0, service.log_text()


def _terminate_all(service: ServiceProcess) -> None:
    """Stop agents the test left behind so no process outlives it."""
    stub = _stub(service)
    for inst in stub.ListInstances(provisioner_pb2.ListInstancesRequest(), timeout=5).instances:
        op = stub.Terminate(provisioner_pb2.TerminateRequest(request_id=f"cleanup-{inst.node_id}",
                                                             node_id=inst.node_id), timeout=5)
        _wait_op(stub, op.operation_id)


def _stub(service: ServiceProcess, token: str = TOKEN) -> provisioner_pb2_grpc.ProvisionerStub:
    return provisioner_pb2_grpc.ProvisionerStub(open_channel(service.endpoint, token))


def _wait_op(stub: provisioner_pb2_grpc.ProvisionerStub, op_id: str) -> provisioner_pb2.Operation:
    last = None
    for op in stub.WatchOperation(provisioner_pb2.WatchOperationRequest(operation_id=op_id), timeout=30):
        last = op
    assert last is not None
    return last


def test_health_is_serving_without_a_token(provisioner: ServiceProcess) -> None:
    with grpc.insecure_channel(provisioner.endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "styx.v1.Provisioner"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_calls_without_the_token_are_unauthenticated(provisioner: ServiceProcess, token: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _stub(provisioner, token).ListProviders(provisioner_pb2.ListProvidersRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_local_provider_is_listed_and_enabled(provisioner: ServiceProcess) -> None:
    providers = _stub(provisioner).ListProviders(provisioner_pb2.ListProvidersRequest(), timeout=5).providers
    local = {p.name: p for p in providers}["local"]
    assert local.enabled and not local.reason


def test_host_offer_is_listed(provisioner: ServiceProcess) -> None:
    stub = _stub(provisioner)
    for request in (provisioner_pb2.ListOffersRequest(), provisioner_pb2.ListOffersRequest(provider="local")):
        offers = [o for o in stub.ListOffers(request, timeout=10).offers if o.provider == "local"]
        assert len(offers) == 1
        offer = offers[0]
        assert (offer.region, offer.instance_type, offer.price_per_hour) == ("local", "host", 0)
        assert (offer.cpus, offer.memory_gib, offer.max_instances) == (1, 0.5, 1)
        assert offer.accelerator_count == len(hardware.detect_gpus())


def test_unknown_provider_is_invalid_argument(provisioner: ServiceProcess) -> None:
    stub = _stub(provisioner)
    with pytest.raises(grpc.RpcError) as info:
        stub.Provision(
            provisioner_pb2.ProvisionRequest(
                request_id="r-1", node_id="n-1", offer=common_pb2.Offer(provider="bogus", instance_type="x")
            ),
            timeout=5,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "offer.provider" in info.value.details() and "bogus" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.ListOffers(provisioner_pb2.ListOffersRequest(provider="bogus"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.GetOperation(provisioner_pb2.GetOperationRequest(operation_id="op-nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_local_instance_lifecycle(provisioner: ServiceProcess, styx_home: Path) -> None:
    stub = _stub(provisioner)
    offer = common_pb2.Offer(provider="local", region="local", instance_type="host")
    request = provisioner_pb2.ProvisionRequest(request_id="r-1", node_id="n-1", offer=offer, labels={"k": "v"})
    op = stub.Provision(request, timeout=5)
    assert stub.Provision(request, timeout=5).operation_id == op.operation_id  # idempotent
    done = _wait_op(stub, op.operation_id)
    assert done.state == provisioner_pb2.OPERATION_STATE_DONE, done
    instance_id = done.instance.instance_id
    assert instance_id.startswith("pid-")
    pid = int(instance_id.removeprefix("pid-"))
    assert pid_alive(pid)
    argv = _cmdline(pid)
    assert argv[1:3] == ["-m", "styx.agent"]
    assert argv[argv.index("--node-id") + 1] == "n-1"
    assert argv[argv.index("--cpus") + 1] == "1.0"
    assert "--label" in argv and "k=v" in argv
    assert TOKEN not in " ".join(argv)  # the token travels in the environment only
    assert os.getpgid(pid) == pid  # its own session and group
    assert (styx_home / "local" / "logs" / "agent-n-1.log").exists()

    # Only one local node may exist (STYX_LOCAL_MAX_NODES default 1).
    second = stub.Provision(provisioner_pb2.ProvisionRequest(request_id="r-2", node_id="n-2", offer=offer),
                            timeout=5)
    assert second.state == provisioner_pb2.OPERATION_STATE_FAILED
    assert second.error.kind == provisioner_pb2.PROVIDER_ERROR_KIND_CAPACITY

    term = _wait_op(stub, stub.Terminate(provisioner_pb2.TerminateRequest(request_id="t-1", node_id="n-1"),
                                         timeout=5).operation_id)
    assert term.state == provisioner_pb2.OPERATION_STATE_DONE
    assert term.instance.state == provisioner_pb2.INSTANCE_STATE_TERMINATED
    wait_until(lambda: not pid_alive(pid), timeout=5, message="agent process to exit")
    assert stub.ListInstances(provisioner_pb2.ListInstancesRequest(), timeout=5).instances == []


def test_dead_agent_is_marked_terminated(provisioner: ServiceProcess) -> None:
    stub = _stub(provisioner)
    offer = common_pb2.Offer(provider="local", instance_type="host")
    done = _wait_op(stub, stub.Provision(
        provisioner_pb2.ProvisionRequest(request_id="r-1", node_id="n-1", offer=offer), timeout=5).operation_id)
    pid = int(done.instance.instance_id.removeprefix("pid-"))
    os.kill(pid, 9)

    def terminated() -> bool:
        found = stub.ListInstances(provisioner_pb2.ListInstancesRequest(include_terminated=True), timeout=5)
        return [i.state for i in found.instances] == [provisioner_pb2.INSTANCE_STATE_TERMINATED]

    wait_until(terminated, timeout=10, message="the reconcile loop to notice the dead agent")
