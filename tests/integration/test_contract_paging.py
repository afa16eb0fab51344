"""ListJobs pages (AIP-158): page_size, page_token, next_page_token, with no gaps or repeats."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from contract_plane import serve_plane
from styx.v1 import common_pb2, scheduler_pb2


def test_list_jobs_pages_through_every_job_once(tmp_path: Path) -> None:
    with serve_plane(tmp_path) as plane:
        submitted = []
        for i in range(5):
            job = scheduler_pb2.JobSpec(name=f"j{i}", tasks=[common_pb2.TaskSpec(name="t", run="true")])
            reply = plane.sched.SubmitJob(scheduler_pb2.SubmitJobRequest(request_id=f"r{i}", job=job), timeout=10)
            submitted.append(reply.job_id)
        seen, token, pages = [], "", 0
        while True:
            page = plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(page_size=2, page_token=token), timeout=10)
            seen += [j.job_id for j in page.jobs]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert pages == 3 and sorted(seen) == sorted(submitted) and len(set(seen)) == 5
        everything = plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(), timeout=10)
        assert [j.job_id for j in everything.jobs] == seen and everything.next_page_token == ""
        assert len(plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(limit=3), timeout=10).jobs) == 3
        for bad in ("garbage", "job:nan:j-1", "job:1.0:"):
            with pytest.raises(grpc.RpcError) as err:
                plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(page_token=bad), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.value.details()
