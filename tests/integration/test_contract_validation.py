"""Every request is checked against the proto's rules at the edge, with rich errors.

Each test is a regression test for a hole found by a bad-input run (issue 11): the bad
request must come back INVALID_ARGUMENT (or NOT_FOUND) naming the field, with a
google.rpc.BadRequest detail, a short message, and nothing stored.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import grpc
import pytest

from contract_plane import Plane, serve_plane
from styx.common.status import DOMAIN, details_of
from styx.v1 import common_pb2, scheduler_pb2


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with serve_plane(tmp_path_factory.mktemp("plane")) as p:
        yield p


def _job(**task: object) -> scheduler_pb2.SubmitJobRequest:
    spec = common_pb2.TaskSpec(name="t", run="true")
    for key, value in task.items():
        if key == "resources":
            spec.resources.CopyFrom(value)  # type: ignore[arg-type]
        elif key == "retry":
            spec.retry.CopyFrom(value)  # type: ignore[arg-type]
        elif key == "envs":
            spec.envs.update(value)  # type: ignore[arg-type]
        else:
            setattr(spec, key, value)
    return scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=scheduler_pb2.JobSpec(tasks=[spec]))


def _refused(call, request, code=grpc.StatusCode.INVALID_ARGUMENT) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        reply = call(request, timeout=10)
        if hasattr(reply, "__next__"):
            next(reply)
    err = caught.value
    assert err.code() == code, (err.code(), err.details())
    assert len(err.details()) < 2100
    return err


def _field_of(err: grpc.RpcError) -> str:
    info = details_of(err)
    assert info.domain == DOMAIN and info.reason == "INVALID_ARGUMENT"
    assert info.violations, "a BadRequest detail names the field"
    return info.violations[0][0]


def _no_jobs(plane: Plane) -> None:
    jobs = plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(), timeout=10).jobs
    assert [j.name for j in jobs if j.name != "valid"] == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, 1e9])
def test_cpus_must_be_finite_and_in_bounds(plane: Plane, value: float) -> None:
    err = _refused(plane.sched.SubmitJob, _job(resources=common_pb2.ResourceRequest(cpus=value)))
    assert _field_of(err) == "job.tasks[0].resources.cpus"
    _no_jobs(plane)


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"resources": common_pb2.ResourceRequest(memory_gib=math.nan)}, "job.tasks[0].resources.memory_gib"),
        ({"resources": common_pb2.ResourceRequest(disk_gb=math.inf)}, "job.tasks[0].resources.disk_gb"),
        ({"timeout_s": math.nan}, "job.tasks[0].timeout_s"),
        ({"timeout_s": math.inf}, "job.tasks[0].timeout_s"),
        ({"retry": common_pb2.RetryPolicy(max_retries=1, backoff_s=math.nan)}, "job.tasks[0].retry.backoff_s"),
        ({"retry": common_pb2.RetryPolicy(max_retries=1, max_backoff_s=-1)}, "job.tasks[0].retry.max_backoff_s"),
        ({"envs": {"A": "x\x00y"}}, "job.tasks[0].envs['A']"),
        ({"envs": {"1BAD": "x"}}, "job.tasks[0].envs['1BAD']"),
        ({"name": "a\u202eb"}, "job.tasks[0].name"),
        ({"resources": common_pb2.ResourceRequest(cluster="../../etc")}, "job.tasks[0].resources.cluster"),
    ],
)
def test_bad_task_fields_are_refused_at_submit(plane: Plane, task: dict, field: str) -> None:
    err = _refused(plane.sched.SubmitJob, _job(**task))
    assert _field_of(err) == field, err.details()
    _no_jobs(plane)


@pytest.mark.parametrize("name", ["bad\x00name", "spoof\u202egnp.exe", "zero\u200dwidth", "bell\x07"])
def test_job_names_with_control_or_bidi_characters_are_refused(plane: Plane, name: str) -> None:
    request = _job()
    request.job.name = name
    assert _field_of(_refused(plane.sched.SubmitJob, request)) == "job.name"


@pytest.mark.parametrize("request_id", ["has\nnewline", "tab\there", "x" * 129])
def test_request_ids_must_be_printable_and_short(plane: Plane, request_id: str) -> None:
    request = _job()
    request.request_id = request_id
    assert _field_of(_refused(plane.sched.SubmitJob, request)) == "request_id"


def test_any_of_and_ordered_together_are_refused(plane: Plane) -> None:
    alt = common_pb2.ResourceRequest(cpus=1)
    res = common_pb2.ResourceRequest(any_of=[alt], ordered=[alt])
    err = _refused(plane.sched.SubmitJob, _job(resources=res))
    assert _field_of(err) == "job.tasks[0].resources.ordered"
    assert "any_of" in err.details()


def test_undefined_enum_values_are_refused(plane: Plane) -> None:
    request = scheduler_pb2.ListTasksRequest(states=[common_pb2.TASK_STATE_PENDING, 99])
    assert _field_of(_refused(plane.sched.ListTasks, request)) == "states[1]"


def test_a_megabyte_name_is_invalid_argument_with_a_short_message(plane: Plane) -> None:
    err = _refused(plane.sched.SubmitJob, _job(name="n" * (1 << 20)))
    assert _field_of(err) == "job.tasks[0].name"
    assert "1048576" in err.details() and len(err.details()) < 300


def test_watch_events_after_the_largest_cursor_is_invalid_argument_not_internal(plane: Plane) -> None:
    request = scheduler_pb2.WatchEventsRequest(after_seq=2**64 - 1, no_follow=True)
    assert _field_of(_refused(plane.sched.WatchEvents, request)) == "after_seq"
    ok = plane.sched.WatchEvents(scheduler_pb2.WatchEventsRequest(after_seq=2**63 - 1, no_follow=True), timeout=10)
    assert list(ok) == []


@pytest.mark.parametrize("field", ["task_id", "job_id"])
def test_watch_events_on_an_unknown_id_is_not_found(plane: Plane, field: str) -> None:
    request = scheduler_pb2.WatchEventsRequest(**{field: "t-doesnotexist"})
    err = _refused(plane.sched.WatchEvents, request, grpc.StatusCode.NOT_FOUND)
    assert details_of(err).reason == "NOT_FOUND"


def test_required_fields_are_named(plane: Plane) -> None:
    assert _field_of(_refused(plane.sched.GetTask, scheduler_pb2.GetTaskRequest())) == "task_id"
    assert _field_of(_refused(plane.sched.SubmitJob, scheduler_pb2.SubmitJobRequest(request_id="r"))) == "job"


def test_a_valid_job_still_goes_through(plane: Plane) -> None:
    request = _job(resources=common_pb2.ResourceRequest(cpus=0.5))
    request.job.name = "valid"
    reply = plane.sched.SubmitJob(request, timeout=10)
    assert reply.job_id and [t.spec.name for t in reply.tasks] == ["t"]


def test_a_gzip_bomb_workdir_is_refused_at_submit(plane: Plane) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 300 * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    request = _job()
    request.job.workdir_archive = buf.getvalue()
    err = _refused(plane.sched.SubmitJob, request)
    assert _field_of(err) == "job.workdir_archive" and "256 MiB" in err.details()
    _no_jobs(plane)
