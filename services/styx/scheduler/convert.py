"""Protobuf <-> domain conversion for the scheduler and the agent gateway."""

from __future__ import annotations

import functools

from styx.common.errors import InvalidArgument
from styx.common.resources import Resources, resources_from_pb, resources_to_pb
from styx.common.secretbox import redacted
from styx.common.timeutil import to_timestamp
from styx.scheduler.model import Event, RetryPolicy, TaskRecord, TaskSpec
from styx.scheduler.stats import JobView, Stats
from styx.scheduler.workqueue import Assign, Cancel, WorkItem
from styx.v1 import agent_pb2, common_pb2, scheduler_pb2

STATE_TO_PB = {
    "PENDING": common_pb2.TASK_STATE_PENDING,
    "SCHEDULED": common_pb2.TASK_STATE_SCHEDULED,
    "RUNNING": common_pb2.TASK_STATE_RUNNING,
    "SUCCEEDED": common_pb2.TASK_STATE_SUCCEEDED,
    "FAILED": common_pb2.TASK_STATE_FAILED,
    "CANCELLED": common_pb2.TASK_STATE_CANCELLED,
    "SKIPPED": common_pb2.TASK_STATE_SKIPPED,
}
STATE_FROM_PB: dict[int, str] = {v: k for k, v in STATE_TO_PB.items()}
EVENT_TO_PB = {
    "SUBMITTED": common_pb2.EVENT_TYPE_SUBMITTED,
    "SCHEDULED": common_pb2.EVENT_TYPE_SCHEDULED,
    "STARTED": common_pb2.EVENT_TYPE_STARTED,
    "SUCCEEDED": common_pb2.EVENT_TYPE_SUCCEEDED,
    "FAILED": common_pb2.EVENT_TYPE_FAILED,
    "CANCELLED": common_pb2.EVENT_TYPE_CANCELLED,
    "RETRYING": common_pb2.EVENT_TYPE_RETRYING,
    "SKIPPED": common_pb2.EVENT_TYPE_SKIPPED,
}


def state_from_pb(value: int, field: str) -> str:
    """TaskState enum -> state name; INVALID_ARGUMENT for UNSPECIFIED or unknown values."""
    try:
        return STATE_FROM_PB[value]
    except KeyError:
        raise InvalidArgument(f"{field}: {value} is not a task state; use TASK_STATE_PENDING..SKIPPED") from None


_PAGE_PREFIX = "seq:"


def seq_to_page_token(seq: int) -> str:
    """ListTasks' page token: the submission number of the page's last task."""
    return f"{_PAGE_PREFIX}{seq}"


def page_token_to_seq(token: str) -> int | None:
    """The cursor in a page token; None for "" (the first page)."""
    if not token:
        return None
    digits = token.removeprefix(_PAGE_PREFIX)
    if not token.startswith(_PAGE_PREFIX) or not digits.isdigit():
        raise InvalidArgument("page_token: not a token ListTasks returned; pass next_page_token as given, or ''")
    return int(digits)


_JOB_PAGE_PREFIX = "job:"


def job_page_token(created_at: float, job_id: str) -> str:
    """ListJobs' page token: where the page's last job sits in (created_at, job_id) order."""
    return f"{_JOB_PAGE_PREFIX}{created_at!r}:{job_id}"


def job_page_token_to_cursor(token: str) -> tuple[float, str] | None:
    """The cursor in a ListJobs page token; None for "" (the first page)."""
    if not token:
        return None
    stamp, sep, job_id = token.removeprefix(_JOB_PAGE_PREFIX).partition(":")
    try:
        value = float(stamp)
    except ValueError:
        value = float("nan")
    if not token.startswith(_JOB_PAGE_PREFIX) or not sep or not job_id or value != value:
        raise InvalidArgument("page_token: not a token ListJobs returned; pass next_page_token as given, or ''")
    return value, job_id


@functools.lru_cache(maxsize=4096)
def _resources_from_bytes(data: bytes) -> Resources:
    # The tasks of a big job mostly share one ResourceRequest: convert each distinct one once.
    return resources_from_pb(common_pb2.ResourceRequest.FromString(data))


def spec_from_pb(msg: common_pb2.TaskSpec) -> TaskSpec:
    """TaskSpec message -> TaskSpec (validation happens in model.validate_job)."""
    return TaskSpec(
        name=msg.name,
        run=msg.run,
        resources=_resources_from_bytes(msg.resources.SerializeToString(deterministic=True)),
        setup=msg.setup,
        envs=dict(msg.envs),
        workdir=msg.workdir,
        priority=msg.priority,
        depends_on=tuple(msg.depends_on),
        retry=RetryPolicy(
            max_retries=msg.retry.max_retries,
            backoff_s=msg.retry.backoff_s,
            max_backoff_s=msg.retry.max_backoff_s,
            exit_codes=tuple(msg.retry.exit_codes),
        ),
        timeout_s=msg.timeout_s,
        num_nodes=msg.num_nodes,
        secrets=dict(msg.secrets),
    )


def spec_to_pb(spec: TaskSpec, reveal_secrets: bool = False) -> common_pb2.TaskSpec:
    """TaskSpec -> message. Secrets show as REDACTED unless ``reveal_secrets`` (a client's
    own submission, or an agent's assignment once the scheduler opened them)."""
    return common_pb2.TaskSpec(
        name=spec.name,
        resources=resources_to_pb(spec.resources),
        setup=spec.setup,
        run=spec.run,
        envs=spec.envs,
        workdir=spec.workdir,
        priority=spec.priority,
        depends_on=list(spec.depends_on),
        retry=common_pb2.RetryPolicy(
            max_retries=spec.retry.max_retries,
            backoff_s=spec.retry.backoff_s,
            max_backoff_s=spec.retry.max_backoff_s,
            exit_codes=list(spec.retry.exit_codes),
        ),
        timeout_s=spec.timeout_s,
        num_nodes=spec.num_nodes if spec.num_nodes > 1 else 0,
        secrets=spec.secrets if reveal_secrets else redacted(spec.secrets),
    )


def task_to_pb(rec: TaskRecord) -> common_pb2.Task:
    """TaskRecord -> Task message."""
    return common_pb2.Task(
        task_id=rec.task_id,
        job_id=rec.job_id,
        spec=spec_to_pb(rec.spec),
        state=STATE_TO_PB[rec.state],
        attempt=rec.attempt,
        node_id=rec.node_id,
        gpu_indices=list(rec.gpu_indices),
        exit_code=rec.exit_code or 0,
        has_exit_code=rec.exit_code is not None,
        failure_reason=rec.failure_reason,
        created_at=to_timestamp(rec.created_at),
        scheduled_at=to_timestamp(rec.scheduled_at),
        started_at=to_timestamp(rec.started_at),
        finished_at=to_timestamp(rec.finished_at),
        retry_at=to_timestamp(rec.retry_at) if rec.state == "PENDING" else None,
        job_name=rec.job_name,
        ranks=[
            common_pb2.TaskRank(
                node_id=r.node_id,
                gpu_indices=list(r.gpu_indices),
                state=STATE_TO_PB[r.state],
                exit_code=r.exit_code or 0,
                has_exit_code=r.exit_code is not None,
                address=r.address,
            )
            for r in rec.ranks
        ],
    )


JOB_STATE_TO_PB = {
    "PENDING": scheduler_pb2.JOB_STATE_PENDING,
    "RUNNING": scheduler_pb2.JOB_STATE_RUNNING,
    "SUCCEEDED": scheduler_pb2.JOB_STATE_SUCCEEDED,
    "FAILED": scheduler_pb2.JOB_STATE_FAILED,
    "CANCELLED": scheduler_pb2.JOB_STATE_CANCELLED,
}


def job_to_pb(job: JobView) -> scheduler_pb2.Job:
    """JobView -> Job message."""
    return scheduler_pb2.Job(
        job_id=job.job_id,
        name=job.name,
        state=JOB_STATE_TO_PB[job.state],
        task_counts=job.task_counts,
        tasks=[task_to_pb(r) for r in job.tasks],
        created_at=to_timestamp(job.created_at),
    )


def task_ref_to_pb(rec: TaskRecord) -> common_pb2.Task:
    """The short form of a task (id, job, name, state) that SubmitJob answers with."""
    return common_pb2.Task(
        task_id=rec.task_id,
        job_id=rec.job_id,
        spec=common_pb2.TaskSpec(name=rec.spec.name),
        state=STATE_TO_PB[rec.state],
        attempt=rec.attempt,
        job_name=rec.job_name,
    )


def event_to_pb(ev: Event) -> common_pb2.Event:
    """Event -> message."""
    return common_pb2.Event(
        seq=ev.seq,
        time=to_timestamp(ev.time),
        type=EVENT_TO_PB.get(ev.type, common_pb2.EVENT_TYPE_UNSPECIFIED),
        job_id=ev.job_id,
        task_id=ev.task_id,
        state=STATE_TO_PB.get(ev.state, common_pb2.TASK_STATE_UNSPECIFIED),
        attempt=ev.attempt,
        node_id=ev.node_id,
        message=ev.message,
    )


def work_item_to_pb(item: WorkItem) -> agent_pb2.WorkItem:
    """Assign/Cancel -> WorkItem message."""
    if isinstance(item, Cancel):
        return agent_pb2.WorkItem(
            cancel=agent_pb2.Cancellation(
                task_id=item.task_id, attempt=item.attempt, reason=item.reason, rank=item.rank
            )
        )
    assert isinstance(item, Assign)
    return agent_pb2.WorkItem(
        assign=agent_pb2.Assignment(
            task_id=item.task_id,
            job_id=item.job_id,
            attempt=item.attempt,
            spec=spec_to_pb(item.spec, reveal_secrets=True),
            gpu_indices=list(item.gpu_indices),
            has_workdir=item.has_workdir,
            rank=item.rank,
            num_nodes=item.num_nodes if item.num_nodes > 1 else 0,
            node_addresses=list(item.node_addresses),
        )
    )


def stats_to_pb(stats: Stats) -> scheduler_pb2.Stats:
    """Stats -> message."""
    from styx.common.timeutil import now

    return scheduler_pb2.Stats(
        tasks_by_state=stats.tasks_by_state,
        jobs_total=stats.jobs_total,
        queue_wait_p50_s=stats.queue_wait_p50_s,
        queue_wait_p99_s=stats.queue_wait_p99_s,
        run_time_p50_s=stats.run_time_p50_s,
        run_time_p99_s=stats.run_time_p99_s,
        computed_at=to_timestamp(now()),
        throughput_per_s=stats.throughput_per_s,
        by_priority=[
            scheduler_pb2.PriorityStats(
                priority=p.priority,
                tasks_by_state=p.tasks_by_state,
                queue_wait_p50_s=p.queue_wait_p50_s,
                queue_wait_p99_s=p.queue_wait_p99_s,
            )
            for p in stats.by_priority
        ],
    )
