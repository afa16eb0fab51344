"""styx-scheduler as a real process: big jobs are read in bounded replies.

GetJob caps the tasks it returns (counts still cover all) and ListTasks pages with a
token, so no reply grows with the job; other languages' gRPC clients keep the default
4 MB receive limit. No broker runs here: nothing is dispatched, which keeps every task
PENDING while the job is read.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers import ServiceProcess, start_service
from styx.common.clients import open_channel
from styx.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

TOKEN = "test-token-scheduler-service"
TASKS = 1200


@pytest.fixture
def scheduler(tmp_path: Path, styx_home: Path) -> Iterator[ServiceProcess]:
    env = dict(os.environ, STYX_TOKEN=TOKEN)
    db = f"sqlite:///{tmp_path / 'scheduler.db'}"
    args = ["--port", "0", "--broker", "127.0.0.1:9", "--db-url", db]
    service = start_service("styx.scheduler", args, tmp_path, env)
    yield service
    assert service.stop() == 0, service.log_text()


@pytest.fixture
def job(scheduler: ServiceProcess) -> tuple[scheduler_pb2_grpc.SchedulerStub, scheduler_pb2.SubmitJobResponse]:
    stub = scheduler_pb2_grpc.SchedulerStub(open_channel(scheduler.endpoint, TOKEN))
    tasks = [common_pb2.TaskSpec(name=f"t{i}", run="true") for i in range(TASKS)]
    request = scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=scheduler_pb2.JobSpec(tasks=tasks))
    return stub, stub.SubmitJob(request, timeout=60)


def test_get_job_caps_its_tasks_but_counts_them_all(job) -> None:
    stub, submitted = job
    got = stub.GetJob(scheduler_pb2.GetJobRequest(job_id=submitted.job_id), timeout=30)
    assert len(got.tasks) == 1000 and sum(got.task_counts.values()) == TASKS
    assert [t.spec.name for t in got.tasks[:3]] == ["t0", "t1", "t2"]  # submission order
    small = stub.GetJob(scheduler_pb2.GetJobRequest(job_id=submitted.job_id, task_limit=5), timeout=30)
    assert [t.spec.name for t in small.tasks] == ["t0", "t1", "t2", "t3", "t4"]
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJob(scheduler_pb2.GetJobRequest(job_id=submitted.job_id, task_limit=10001), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "task_limit" in str(err.value.details())


@pytest.mark.parametrize("oldest_first", [True, False])
def test_list_tasks_pages_through_a_job_without_gaps_or_repeats(job, oldest_first: bool) -> None:
    stub, submitted = job
    names: list[str] = []
    token, pages = "", 0
    while True:
        request = scheduler_pb2.ListTasksRequest(
            job_id=submitted.job_id, limit=500, page_token=token, oldest_first=oldest_first
        )
        reply = stub.ListTasks(request, timeout=30)
        names += [t.spec.name for t in reply.tasks]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    expected = [f"t{i}" for i in range(TASKS)]
    assert pages == 3 and names == (expected if oldest_first else expected[::-1])
    with pytest.raises(grpc.RpcError) as err:
        stub.ListTasks(scheduler_pb2.ListTasksRequest(job_id=submitted.job_id, page_token="garbage"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in str(err.value.details())


def test_cancel_job_cancels_every_task_past_the_cap(job) -> None:
    stub, submitted = job
    request = scheduler_pb2.CancelJobRequest(request_id="cancel-all", job_id=submitted.job_id)
    cancelled = stub.CancelJob(request, timeout=120)
    assert dict(cancelled.task_counts) == {"CANCELLED": TASKS}
    assert cancelled.state == scheduler_pb2.JOB_STATE_CANCELLED
