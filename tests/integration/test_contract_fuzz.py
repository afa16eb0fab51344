"""Random valid and invalid messages, built from the descriptors, for every RPC of a running plane.

Only documented status codes may come back (docs/api.md), never UNKNOWN or INTERNAL, and
afterwards the plane is healthy and still has the data it had. The default run sends
FAST_EXAMPLES messages per RPC; the slow run (CI's `pytest -m slow`) sends 2,000.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings

from contract_fuzz import requests
from contract_plane import Plane, serve_plane
from styx.v1 import agent_pb2, broker_pb2, common_pb2, scheduler_pb2

FAST_EXAMPLES = 30
SLOW_EXAMPLES = 2000
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # streams that follow, cut by our short deadline
}
METHODS = [
    method
    for module in (scheduler_pb2, agent_pb2, broker_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with serve_plane(tmp_path_factory.mktemp("fuzz")) as p:
        yield p


@pytest.fixture(scope="module")
def kept_job(plane: Plane) -> str:
    job = scheduler_pb2.JobSpec(name="kept", tasks=[common_pb2.TaskSpec(name="t", run="true")])
    return plane.sched.SubmitJob(scheduler_pb2.SubmitJobRequest(request_id="kept-1", job=job), timeout=10).job_id


def _seed(method: MethodDescriptor, kept_job: str) -> Any:
    """A valid request for the method, to mutate (None: only random messages)."""
    task = common_pb2.TaskSpec(name="t", run="true", resources=common_pb2.ResourceRequest(cpus=1))
    seeds: dict[str, Any] = {
        "SubmitJob": scheduler_pb2.SubmitJobRequest(request_id="s-1", job=scheduler_pb2.JobSpec(tasks=[task])),
        "GetJob": scheduler_pb2.GetJobRequest(job_id=kept_job),
        "ListTasks": scheduler_pb2.ListTasksRequest(job_id=kept_job),
        "WatchEvents": scheduler_pb2.WatchEventsRequest(job_id=kept_job, no_follow=True),
        "CreateCluster": broker_pb2.CreateClusterRequest(
            request_id="c-1", name="fz", resources=common_pb2.ResourceRequest(cpus=1)
        ),
        "RegisterNode": broker_pb2.RegisterNodeRequest(
            request_id="n-1", node_id="fz-node", provider="local", capacity=common_pb2.Capacity(cpus=2, memory_gib=2)
        ),
        "Optimize": broker_pb2.OptimizeRequest(resources=common_pb2.ResourceRequest(cpus=1)),
        "Allocate": broker_pb2.AllocateRequest(
            requests=[broker_pb2.AllocationRequest(allocation_id="a-1", resources=common_pb2.ResourceRequest(cpus=1))]
        ),
    }
    return seeds.get(method.name)


def _tame(method: MethodDescriptor, request: Any) -> None:
    """Streams that would follow forever are asked not to (the deadline ends the rest)."""
    if method.name == "WatchEvents":
        request.no_follow = True
    elif method.name == "StreamLogs":
        request.follow = False


def _send(plane: Plane, method: MethodDescriptor, request: Any) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_class = message_factory.GetMessageClass(method.output_type)
    kwargs = {"request_serializer": type(request).SerializeToString, "response_deserializer": response_class.FromString}
    try:
        if method.server_streaming:
            call = plane.channel.unary_stream(path, **kwargs)(request, timeout=0.5)
            for _ in call:
                pass
        else:
            plane.channel.unary_unary(path, **kwargs)(request, timeout=10)
    except grpc.RpcError as err:
        assert err.code() in DOCUMENTED, (method.full_name, err.code(), err.details(), request)
        assert len(err.details() or "") <= 2100
        return err.code()
    return grpc.StatusCode.OK


def _fuzz(plane: Plane, method: MethodDescriptor, examples: int, kept_job: str = "") -> Counter[str]:
    seen: Counter[str] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )
    @given(requests(method.input_type, _seed(method, kept_job)))
    def run(request: Any) -> None:
        _tame(method, request)
        seen[_send(plane, method, request).name] += 1

    run()
    return seen


def _expected(method: MethodDescriptor, examples: int) -> int:
    """How many messages hypothesis can make: it stops early once a small input space is
    exhausted (GetStats has no field, ListNodes one bool)."""
    return examples if len(method.input_type.fields) >= 3 else 1


def _still_fine(plane: Plane, kept_job: str) -> None:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(plane.endpoint))
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    job = plane.sched.GetJob(scheduler_pb2.GetJobRequest(job_id=kept_job), timeout=10)
    assert job.name == "kept" and sum(job.task_counts.values()) == 1


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_fuzzed_requests_get_only_documented_codes(plane: Plane, kept_job: str, method: MethodDescriptor) -> None:
    seen = _fuzz(plane, method, FAST_EXAMPLES, kept_job)
    assert sum(seen.values()) >= _expected(method, FAST_EXAMPLES), seen
    _still_fine(plane, kept_job)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_two_thousand_fuzzed_requests_per_rpc(plane: Plane, kept_job: str, method: MethodDescriptor) -> None:
    seen = _fuzz(plane, method, SLOW_EXAMPLES, kept_job)
    assert sum(seen.values()) >= _expected(method, SLOW_EXAMPLES) * 9 // 10, seen
    _still_fine(plane, kept_job)
