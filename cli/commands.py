"""Implementations of the sky subcommands that talk to a control plane.

Imported lazily by ``styx_cli.main`` once a command needs it (this module imports grpc).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from styx.v1 import common_pb2, scheduler_pb2
from styx_cli import output
from styx_cli.client import SchedulerClient, request_id
from styx_cli.config import resolve_target
from styx_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError
from styx_cli.spec import build_task_spec

_TERMINAL = (
    common_pb2.TASK_STATE_SUCCEEDED,
    common_pb2.TASK_STATE_FAILED,
    common_pb2.TASK_STATE_CANCELLED,
    common_pb2.TASK_STATE_SKIPPED,
)
# Seconds SubmitJob may take: the scheduler validates and stores the whole job.
SUBMIT_TIMEOUT_S = 30.0
# `sky status --all` / `sky queue --all`: the most ListTasks / ListJobs return in one call.
STATUS_ALL_LIMIT = 10_000
QUEUE_ALL_LIMIT = 1000
QUEUE_DEFAULT_LIMIT = 50


def connect() -> SchedulerClient:
    """A scheduler client for the configured (or local, started on demand) control plane."""
    return SchedulerClient(resolve_target())


def exit_code_for(task: Any) -> int:
    """The process exit code ``sky run`` returns for a finished task.

    SUCCEEDED -> 0; FAILED with an exit status -> that status (a negative status, i.e.
    killed by signal N, becomes 128+N as shells report it); anything else -> 1.
    """
    if task.state == common_pb2.TASK_STATE_SUCCEEDED:
        return EXIT_OK
    if task.state == common_pb2.TASK_STATE_FAILED and task.has_exit_code:
        code = task.exit_code
        if code < 0:
            code = 128 - code
        return code if 0 < code < 256 else EXIT_FAILED
    return EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    """sky run: submit one task, then stream its output and return its exit status."""
    # Validate flags before connecting (or starting a local plane): usage errors exit 2 fast.
    spec = build_task_spec(
        args.command,
        name=args.name or "",
        cpus=args.cpus,
        memory=args.memory,
        gpus=args.gpus,
        arch=getattr(args, "arch", None),
        image_id=getattr(args, "image_id", None),
        priority=args.priority,
        envs=args.env,
        workdir=args.workdir or "",
        secrets=args.secret,
        env_files=args.env_file,
    )
    with connect() as client:
        reply = client.call(
            "SubmitJob",
            scheduler_pb2.SubmitJobRequest(
                request_id=request_id(), job=scheduler_pb2.JobSpec(name=spec.name, tasks=[spec])
            ),
            timeout=SUBMIT_TIMEOUT_S,
        )
        if not reply.tasks:
            raise CliError("the scheduler accepted the job but returned no task")
        task_id = reply.tasks[0].task_id
        if args.detach:
            # stdout gets the bare id so scripts can capture it: ID=$(sky run --detach -- ...).
            print(task_id, flush=True)
            output.info(f"submitted {task_id} (job {reply.job_id}); follow: sky logs {task_id} --follow")
            return EXIT_OK
        if sys.stderr.isatty():
            output.info(f"submitted {task_id} (job {reply.job_id}); streaming output, Ctrl-C detaches")
        try:
            task = follow(client, task_id, sys.stdout.buffer)
        except KeyboardInterrupt:
            output.info(
                f"\ndetached from {task_id}; it keeps running. "
                f"Follow: sky logs {task_id} --follow   stop: sky cancel {task_id}"
            )
            return EXIT_INTERRUPTED
        report_end(task)
        return exit_code_for(task)


def report_end(task: Any) -> None:
    """Say on stderr why a task did not succeed (the reason matters most when it printed nothing)."""
    state = output.state_name(task.state)
    if task.state == common_pb2.TASK_STATE_SUCCEEDED:
        return
    if task.state == common_pb2.TASK_STATE_FAILED:
        reason = task.failure_reason or (f"exit code {task.exit_code}" if task.has_exit_code else "no reason given")
        output.error(f"task {task.task_id} failed: {reason}")
    else:
        reason = f": {task.failure_reason}" if task.failure_reason else ""
        output.error(f"task {task.task_id} {state.lower()}{reason}")


def follow(
    client: SchedulerClient,
    task_id: str,
    out: BinaryIO,
    only_attempt: int = 0,
    rank: int = 0,
    start: tuple[int, int] = (0, 0),
) -> Any:
    """Write the task's output to ``out`` as it arrives; return the task once it is terminal.

    Tracks (attempt, offset) so a reopened stream (deadline, retry of the task) neither
    repeats nor skips bytes; after the task ends, drains whatever output arrived last.
    With ``only_attempt``, prints that attempt only and returns once its output is complete.
    ``rank`` picks the node of a multi-node task (0 for one-node tasks). ``start`` is the
    (attempt, offset) already printed (``sky logs --tail``).
    """
    if only_attempt:
        return _follow_attempt(client, task_id, out, only_attempt, rank)
    attempt, offset = start

    def pump(follow_flag: bool) -> None:
        nonlocal attempt, offset
        request = scheduler_pb2.StreamLogsRequest(
            task_id=task_id, attempt=attempt, follow=follow_flag, offset=offset, rank=rank
        )
        for chunk in client.stream("StreamLogs", request):
            if chunk.attempt != attempt and chunk.attempt:
                if attempt and chunk.attempt > attempt:
                    out.flush()
                    output.info(f"--- {task_id}: attempt {chunk.attempt} ---")
                attempt, offset = chunk.attempt, 0
            skip = max(0, offset - chunk.offset)
            data = chunk.data[skip:]
            if data:
                out.write(data)
                out.flush()
            offset = max(offset, chunk.offset + len(chunk.data))

    while True:
        pump(True)
        task = client.call("GetTask", scheduler_pb2.GetTaskRequest(task_id=task_id))
        if task.state in _TERMINAL:
            if task.attempt and task.attempt >= attempt:
                if task.attempt != attempt:
                    attempt, offset = task.attempt, 0
                pump(False)
            return task
        if task.attempt > attempt:
            attempt, offset = task.attempt, 0
        time.sleep(0.2)


def _follow_attempt(client: SchedulerClient, task_id: str, out: BinaryIO, attempt: int, rank: int = 0) -> Any:
    """Follow one attempt's output until that attempt has ended (a later attempt or a final state)."""
    offset = 0
    while True:
        request = scheduler_pb2.StreamLogsRequest(
            task_id=task_id, attempt=attempt, follow=True, offset=offset, rank=rank
        )
        for chunk in client.stream("StreamLogs", request):
            data = chunk.data[max(0, offset - chunk.offset) :]
            if data:
                out.write(data)
                out.flush()
            offset = max(offset, chunk.offset + len(chunk.data))
        task = client.call("GetTask", scheduler_pb2.GetTaskRequest(task_id=task_id))
        if task.attempt > attempt or task.state in _TERMINAL:
            # The stream also ends at its deadline; one last non-following read drains the rest.
            request = scheduler_pb2.StreamLogsRequest(
                task_id=task_id, attempt=attempt, follow=False, offset=offset, rank=rank
            )
            for chunk in client.stream("StreamLogs", request):
                out.write(chunk.data[max(0, offset - chunk.offset) :])
                offset = max(offset, chunk.offset + len(chunk.data))
            out.flush()
            return task
        time.sleep(0.2)


def cmd_status(args: argparse.Namespace) -> int:
    """sky status: a table (or JSON) of tasks, newest first."""
    states = []
    known = [n for n in common_pb2.TaskState.DESCRIPTOR.values_by_name if n != "TASK_STATE_UNSPECIFIED"]
    for name in args.state or ():
        key = f"TASK_STATE_{name.upper()}"
        if key not in known:
            choices = ", ".join(n.removeprefix("TASK_STATE_") for n in known)
            raise CliError(f"--state: {name!r} is not a task state; use one of {choices}", EXIT_USAGE)
        states.append(common_pb2.TaskState.Value(key))
    with connect() as client:
        if args.task:
            tasks = [client.call("GetTask", scheduler_pb2.GetTaskRequest(task_id=t)) for t in args.task]
        else:
            limit = STATUS_ALL_LIMIT if args.all else args.limit
            if limit < 1:
                raise CliError(f"--limit: must be at least 1, got {limit}", EXIT_USAGE)
            tasks = client.call(
                "ListTasks",
                scheduler_pb2.ListTasksRequest(
                    job_id=args.job or "", states=states, limit=min(limit, STATUS_ALL_LIMIT)
                ),
            ).tasks
            if len(tasks) == limit and not args.all and not args.json:
                output.info(f"showing the newest {limit} tasks; --all shows every task")
        rows = [output.task_to_dict(t) for t in tasks]
        if getattr(args, "verbose", False):
            # Only with -v: two more calls per task (attempts, events); plain status stays one call.
            from styx_cli import attempts

            attempts.add_details(client, rows)
    if not args.json and not args.task:
        from styx_cli import clusters

        clusters.print_clusters(clusters.list_clusters())
    output.print_tasks(rows, as_json=args.json)
    if getattr(args, "verbose", False) and not args.json:
        attempts.print_details(rows, sys.stdout)
    return EXIT_OK


def all_tasks(client: SchedulerClient, job_id: str) -> Iterator[Any]:
    """Every task of a job in submission order, page by page (GetJob caps its tasks)."""
    token = ""
    while True:
        request = scheduler_pb2.ListTasksRequest(
            job_id=job_id, limit=QUEUE_ALL_LIMIT, page_token=token, oldest_first=True
        )
        reply = client.call("ListTasks", request)
        yield from reply.tasks
        token = reply.next_page_token
        if not token:
            return


def cmd_queue(args: argparse.Namespace) -> int:
    """sky queue: jobs newest first (aggregate state, task counts, age); with JOB, its tasks."""
    with connect() as client:
        if args.job:
            job = client.call("GetJob", scheduler_pb2.GetJobRequest(job_id=args.job))
            total = sum(job.task_counts.values())
            if len(job.tasks) < total:
                if args.all:
                    del job.tasks[:]
                    job.tasks.extend(all_tasks(client, args.job))
                elif not args.json:
                    output.info(f"showing the first {len(job.tasks)} of {total} tasks; --all shows every one")
            output.print_job(output.job_to_dict(job), as_json=args.json)
            return EXIT_OK
        limit = QUEUE_ALL_LIMIT if args.all else QUEUE_DEFAULT_LIMIT
        jobs = client.call("ListJobs", scheduler_pb2.ListJobsRequest(limit=limit)).jobs
    if len(jobs) == limit and not args.all and not args.json:
        output.info(f"showing the newest {limit} jobs; --all shows more")
    output.print_jobs([output.job_to_dict(j) for j in jobs], as_json=args.json)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    """sky logs: print a task's output (a one-task job's, given the job id); with --follow,
    until the task ends; with --tail N, from its last N lines."""
    if args.attempt < 0 or (args.tail is not None and args.tail < 0):
        raise CliError("--attempt and --tail: must be 0 or more", EXIT_USAGE)
    out = sys.stdout.buffer
    with connect() as client:
        task = _task_of(client, args.task)
        if args.attempt > max(task.attempt, 0) and (not args.follow or task.state in _TERMINAL):
            tried = f"{task.attempt} attempt(s)" if task.attempt else "not run yet"
            raise CliError(f"{task.task_id}: no attempt {args.attempt}; the task has {tried} (see: sky status -v)")
        start = (0, 0)
        if args.tail is not None:
            start = _print_tail(client, task, args, out)
        if args.follow:
            try:
                follow(client, task.task_id, out, only_attempt=args.attempt, rank=args.rank, start=start)
            except KeyboardInterrupt:
                return EXIT_INTERRUPTED
            # Exit 0 whatever the task's outcome: the logs were printed; `sky run` and
            # `sky status` report outcomes.
            return EXIT_OK
        if args.tail is None:
            request = scheduler_pb2.StreamLogsRequest(
                task_id=task.task_id, attempt=args.attempt, follow=False, rank=args.rank
            )
            for chunk in client.stream("StreamLogs", request):
                out.write(chunk.data)
        out.flush()
    return EXIT_OK


def _task_of(client: SchedulerClient, ident: str) -> Any:
    """The task ``sky logs`` shows: a task id's, or the only task of a job id's job."""
    if not ident.startswith("j-"):
        # Looked up first, so an unknown id is a clean NOT_FOUND before any stream.
        return client.call("GetTask", scheduler_pb2.GetTaskRequest(task_id=ident))
    job = client.call("GetJob", scheduler_pb2.GetJobRequest(job_id=ident))
    if len(job.tasks) != 1:
        more = ", ..." if len(job.tasks) > 5 else ""
        names = ", ".join(f"{t.task_id} ({t.spec.name})" for t in job.tasks[:5])
        raise CliError(f"{ident} has {len(job.tasks)} tasks; give a task id to sky logs: {names}{more}")
    return job.tasks[0]


def _print_tail(client: SchedulerClient, task: Any, args: argparse.Namespace, out: BinaryIO) -> tuple[int, int]:
    """Print the last ``args.tail`` lines written so far; returns the (attempt, offset) read."""
    request = scheduler_pb2.StreamLogsRequest(task_id=task.task_id, attempt=args.attempt, follow=False, rank=args.rank)
    data = bytearray()
    attempt = args.attempt or task.attempt
    for chunk in client.stream("StreamLogs", request):
        attempt = chunk.attempt or attempt
        data += chunk.data
    lines = bytes(data).splitlines(keepends=True)
    out.write(b"".join(lines[len(lines) - args.tail :] if args.tail else []))
    out.flush()
    return attempt, len(data)


def cmd_cancel(args: argparse.Namespace) -> int:
    """sky cancel: cancel jobs (every unfinished task, via CancelJob) and tasks; finished ones are
    reported unchanged. Each id is handled even when another fails."""
    bad = [i for i in args.ids if not i.startswith(("j-", "t-"))]
    if bad:
        raise CliError(f"{bad[0]!r} is neither a job id (j-...) nor a task id (t-...); see: sky queue", EXIT_USAGE)
    code = EXIT_OK
    with connect() as client:
        for item in args.ids:
            try:
                if item.startswith("j-"):
                    job = client.call("CancelJob", scheduler_pb2.CancelJobRequest(request_id=request_id(), job_id=item))
                    data = output.job_to_dict(job)
                    state = data["state"]
                    print(
                        f"{item}: {output.paint(state, output.STATE_STYLES.get(state, ''), sys.stdout)} "
                        f"({output.counts_text(data['task_counts'])})"
                    )
                    continue
                task = client.call("CancelTask", scheduler_pb2.CancelTaskRequest(request_id=request_id(), task_id=item))
            except CliError as exc:
                output.error(f"{item}: {exc.message}")
                code = max(code, exc.exit_code)
                continue
            state = output.state_name(task.state)
            if task.state == common_pb2.TASK_STATE_CANCELLED:
                print(f"{item}: {output.paint(state, output.STATE_STYLES[state], sys.stdout)}")
            elif task.state in _TERMINAL:
                print(f"{item}: already {state}, left unchanged")
            else:
                print(f"{item}: cancelling ({state})")
    return code


def cmd_stats(args: argparse.Namespace) -> int:
    """sky stats: task counts per state and queue/run latencies."""
    with connect() as client:
        stats = client.call("GetStats", scheduler_pb2.GetStatsRequest())
    output.print_stats(output.stats_to_dict(stats), as_json=args.json)
    return EXIT_OK
