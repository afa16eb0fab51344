"""gRPC servicers of styx.v1.Scheduler and styx.v1.AgentGateway: a few lines per RPC."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from styx import workdir
from styx.common.errors import InvalidArgument
from styx.scheduler import convert
from styx.scheduler.core import Scheduler
from styx.v1 import agent_pb2, agent_pb2_grpc, common_pb2, scheduler_pb2, scheduler_pb2_grpc

# Workdir archives travel in 1 MiB messages, well under gRPC's default 4 MiB limit.
WORKDIR_CHUNK = 1 << 20


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    """Public scheduler API over ``Scheduler``."""

    def __init__(self, core: Scheduler) -> None:
        self.core = core

    def SubmitJob(
        self, request: scheduler_pb2.SubmitJobRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.SubmitJobResponse:
        if request.job.workdir_archive:
            workdir.check(request.job.workdir_archive)
        specs = [convert.spec_from_pb(s) for s in request.job.tasks]
        job_id, tasks = self.core.submit_job(request.request_id, request.job.name, specs, request.job.workdir_archive)
        return scheduler_pb2.SubmitJobResponse(job_id=job_id, tasks=[convert.task_ref_to_pb(r) for r in tasks])

    def GetTask(self, request: scheduler_pb2.GetTaskRequest, context: grpc.ServicerContext) -> common_pb2.Task:
        return convert.task_to_pb(self.core.get_task(request.task_id))

    def GetJob(self, request: scheduler_pb2.GetJobRequest, context: grpc.ServicerContext) -> scheduler_pb2.Job:
        if request.task_limit > 10000:
            raise InvalidArgument(f"task_limit: at most 10000, got {request.task_limit}; page with ListTasks")
        return convert.job_to_pb(self.core.get_job(request.job_id, request.task_limit or 1000))

    def ListJobs(
        self, request: scheduler_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ListJobsResponse:
        size = request.page_size or request.limit or 100
        jobs = self.core.list_jobs(size, convert.job_page_token_to_cursor(request.page_token))
        last = jobs[-1] if len(jobs) == size else None
        return scheduler_pb2.ListJobsResponse(
            jobs=[convert.job_to_pb(j) for j in jobs],
            next_page_token=convert.job_page_token(last.created_at, last.job_id) if last else "",
        )

    def CancelJob(self, request: scheduler_pb2.CancelJobRequest, context: grpc.ServicerContext) -> scheduler_pb2.Job:
        return convert.job_to_pb(self.core.cancel_job(request.job_id))

    def ListTasks(
        self, request: scheduler_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> scheduler_pb2.ListTasksResponse:
        if request.limit > 10000:
            raise InvalidArgument(f"limit: at most 10000, got {request.limit}")
        states = [convert.state_from_pb(s, f"states[{i}]") for i, s in enumerate(request.states)]
        after = convert.page_token_to_seq(request.page_token)
        limit = request.page_size or request.limit or 1000
        tasks = self.core.list_tasks(request.job_id, states, limit, request.oldest_first, after)
        return scheduler_pb2.ListTasksResponse(
            tasks=[convert.task_to_pb(r) for r in tasks],
            next_page_token=convert.seq_to_page_token(tasks[-1].seq) if len(tasks) == limit else "",
        )

    def CancelTask(self, request: scheduler_pb2.CancelTaskRequest, context: grpc.ServicerContext) -> common_pb2.Task:
        return convert.task_to_pb(self.core.cancel_task(request.task_id))

    def WatchEvents(
        self, request: scheduler_pb2.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.Event]:
        states = [convert.state_from_pb(s, f"states[{i}]") for i, s in enumerate(request.states)]
        # A filter on an id that does not exist would follow forever and match nothing.
        if request.task_id:
            self.core.get_task(request.task_id)
        if request.job_id:
            self.core.get_job(request.job_id, 0)
        events = self.core.watch_events(
            request.after_seq, request.job_id, request.task_id, not request.no_follow, context.is_active, states
        )
        for ev in events:
            yield convert.event_to_pb(ev)

    def StreamLogs(
        self, request: scheduler_pb2.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[scheduler_pb2.LogChunk]:
        chunks = self.core.stream_logs(
            request.task_id, request.attempt, request.offset, request.follow, context.is_active, request.rank
        )
        for attempt, offset, data in chunks:
            yield scheduler_pb2.LogChunk(
                task_id=request.task_id, attempt=attempt, offset=offset, data=data, rank=request.rank
            )

    def GetStats(self, request: scheduler_pb2.GetStatsRequest, context: grpc.ServicerContext) -> scheduler_pb2.Stats:
        return convert.stats_to_pb(self.core.stats())


class AgentGatewayServicer(agent_pb2_grpc.AgentGatewayServicer):
    """The agents' side of the scheduler: work streams, status reports, log appends."""

    def __init__(self, core: Scheduler) -> None:
        self.core = core

    def WorkStream(
        self, request: agent_pb2.WorkStreamRequest, context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.WorkItem]:
        for item in self.core.work_stream(request.node_id, context.is_active):
            revealed = self.core.reveal(request.node_id, item)
            if revealed is not None:
                yield convert.work_item_to_pb(revealed)

    def ReportTaskStatus(
        self, request: agent_pb2.ReportTaskStatusRequest, context: grpc.ServicerContext
    ) -> agent_pb2.ReportTaskStatusResponse:
        state = convert.state_from_pb(request.state, "state")
        exit_code = request.exit_code if request.has_exit_code else None
        rec = self.core.report(
            request.node_id, request.task_id, request.attempt, state, exit_code, request.message, request.rank
        )
        return agent_pb2.ReportTaskStatusResponse(task=convert.task_to_pb(rec))

    def AppendLogs(
        self, request: agent_pb2.AppendLogsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.AppendLogsResponse:
        if not request.task_id:
            raise InvalidArgument("task_id: required")
        length = self.core.append_logs(
            request.task_id, request.attempt, request.offset, request.data, request.rank, request.node_id
        )
        return agent_pb2.AppendLogsResponse(next_offset=length)

    def GetWorkdir(
        self, request: agent_pb2.GetWorkdirRequest, context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.WorkdirChunk]:
        data = self.core.get_workdir(request.job_id, request.node_id)
        for start in range(0, len(data), WORKDIR_CHUNK):
            yield agent_pb2.WorkdirChunk(data=data[start : start + WORKDIR_CHUNK])
