"""Errors carry google.rpc.Status details over real gRPC, and the Python client maps them in one place.

A scheduler servicer whose GetTask raises the domain error named by the task id stands in
for the failures that are hard to cause on purpose (a broker down, a quota reached).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from styx.common import errors
from styx.common.clients import open_channel
from styx.common.server import start_server
from styx.common.status import DOMAIN, details_of, error_from_rpc
from styx.v1 import scheduler_pb2, scheduler_pb2_grpc

TOKEN = "errors-test-token"
RAISED: dict[str, errors.StyxError] = {
    "unavailable": errors.Unavailable("broker: not reachable", metadata={"service": "broker"}),
    "exhausted": errors.ResourceExhausted("queue full", retry_after_s=7.5),
    "invalid": errors.InvalidArgument("job.tasks[0].run: must not be empty"),
    "missing": errors.NotFound("task 't-x' not found", reason="TASK_NOT_FOUND", metadata={"task_id": "t-x"}),
}


class Raising(scheduler_pb2_grpc.SchedulerServicer):
    """GetTask raises RAISED[task_id], or a plain bug for any other id."""

    def GetTask(self, request, context):  # type: ignore[no-untyped-def]
        if request.task_id in RAISED:
            raise RAISED[request.task_id]
        raise KeyError("a bug whose text must not reach the client: secret-value")


@pytest.fixture(scope="module")
def stub() -> Iterator[scheduler_pb2_grpc.SchedulerStub]:
    def register(server: grpc.Server) -> list[str]:
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(Raising(), server)
        return ["styx.v1.Scheduler"]

    running = start_server("127.0.0.1", 0, TOKEN, register, max_workers=4)
    channel = open_channel(f"127.0.0.1:{running.port}", TOKEN)
    yield scheduler_pb2_grpc.SchedulerStub(channel)
    channel.close()
    running.stop(0)


def _error(stub: scheduler_pb2_grpc.SchedulerStub, task_id: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTask(scheduler_pb2.GetTaskRequest(task_id=task_id), timeout=10)
    return caught.value


def test_unavailable_and_resource_exhausted_carry_retry_info(stub) -> None:
    down = error_from_rpc(_error(stub, "unavailable"))
    assert isinstance(down, errors.Unavailable) and down.retry_after_s == 1.0
    assert down.metadata == {"service": "broker"} and down.reason == "UNAVAILABLE"
    full = error_from_rpc(_error(stub, "exhausted"))
    assert isinstance(full, errors.ResourceExhausted) and full.retry_after_s == 7.5


def test_invalid_argument_carries_a_field_violation(stub) -> None:
    err = _error(stub, "invalid")
    info = details_of(err)
    assert info.domain == DOMAIN and info.reason == "INVALID_ARGUMENT"
    assert info.violations == [("job.tasks[0].run", "must not be empty")]
    assert info.retry_after_s is None
    mapped = error_from_rpc(err)
    assert isinstance(mapped, errors.InvalidArgument) and mapped.violations == info.violations


def test_not_found_keeps_its_reason_and_metadata(stub) -> None:
    mapped = error_from_rpc(_error(stub, "missing"))
    assert isinstance(mapped, errors.NotFound)
    assert (mapped.reason, mapped.metadata) == ("TASK_NOT_FOUND", {"task_id": "t-x"})


def test_an_unexpected_error_is_internal_with_a_reference_only(stub) -> None:
    err = _error(stub, "other")
    assert err.code() == grpc.StatusCode.INTERNAL and "secret-value" not in err.details()
    info = details_of(err)
    assert info.reason == "INTERNAL" and info.metadata["ref"] in err.details()


def test_a_wrong_token_is_unauthenticated_with_a_reason_and_no_echo() -> None:
    def register(server: grpc.Server) -> list[str]:
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(Raising(), server)
        return ["styx.v1.Scheduler"]

    running = start_server("127.0.0.1", 0, TOKEN, register, max_workers=4)
    try:
        for token, reason in (("wrong-token-abc", "BAD_TOKEN"), ("", "NO_TOKEN")):
            channel = open_channel(f"127.0.0.1:{running.port}", token)
            err = _error(scheduler_pb2_grpc.SchedulerStub(channel), "missing")
            channel.close()
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert details_of(err).reason == reason
            assert "wrong-token-abc" not in err.details()
    finally:
        running.stop(0)
