"""``sky launch``: submit a task YAML (or an inline command) as a job and follow it.

Imported lazily by ``styx_cli.main`` (this module imports grpc through the client).
Flow: build and validate the job client-side (``styx_cli.plan``), pack the workdir,
SubmitJob, then watch the job's events and stream the output of each task that starts,
prefixed with the task's name when the job has several; finally a one-line summary per
task and an exit code (0 when the job SUCCEEDED; a one-task job exits like ``sky run``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from styx.v1 import common_pb2, scheduler_pb2
from styx_cli import output, plan
from styx_cli.client import SchedulerClient, request_id
from styx_cli.commands import _TERMINAL, SUBMIT_TIMEOUT_S, all_tasks, connect, exit_code_for, follow
from styx_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CliError

# Seconds one Optimize call may take during --dryrun.
OPTIMIZE_TIMEOUT_S = 15.0
# Offers shown per task in --dryrun: the chosen one plus runners-up.
OFFERS_SHOWN = 4


def cmd_launch(args: argparse.Namespace) -> int:
    """sky launch: submit the job; follow it unless --detach; --dryrun only prints the plan."""
    # Everything the user can fix locally is checked before connecting (exit 2, fast).
    job = plan.build_job(args)
    archive = plan.pack_workdir(job.workdir) if job.workdir else b""
    if args.dryrun:
        return dryrun(job, archive)
    tasks = [plan.task_to_pb(t) for t in job.tasks]
    cluster = getattr(args, "cluster", None)
    if cluster:
        from styx_cli import clusters

        clusters.check_name(cluster, "--cluster" if not getattr(args, "exec_mode", False) else "CLUSTER")
        if getattr(args, "exec_mode", False):
            clusters.require_cluster(cluster)
        else:
            # The cluster's nodes must hold the job's biggest task.
            biggest = max(tasks, key=lambda t: (t.resources.cpus, t.resources.memory_gib))
            # ... and its widest gang: a 2-node task needs a 2-node cluster.
            widest = max(t.num_nodes or 1 for t in tasks)
            clusters.ensure_cluster(cluster, biggest.resources, args.idle_minutes, args.down, widest)
        clusters.pin(tasks, cluster)
    request = scheduler_pb2.SubmitJobRequest(
        request_id=request_id(),
        job=scheduler_pb2.JobSpec(name=job.name, tasks=tasks, workdir_archive=archive),
    )
    with connect() as client:
        reply = client.call("SubmitJob", request, timeout=SUBMIT_TIMEOUT_S)
        if not reply.tasks:
            raise CliError("the scheduler accepted the job but returned no task")
        if args.detach:
            # stdout: the job id, then one "TASK_ID NAME" line per task, for scripts.
            print(reply.job_id)
            for task in reply.tasks:
                print(f"{task.task_id} {task.spec.name}")
            sys.stdout.flush()
            output.info(
                f"submitted job {reply.job_id} ({len(reply.tasks)} task(s)); "
                f"watch: sky queue {reply.job_id}   stop: sky cancel {reply.job_id}"
            )
            return EXIT_OK
        output.info(f"submitted job {reply.job_id} ({len(reply.tasks)} task(s)); streaming output, Ctrl-C detaches")
        try:
            final = watch_job(client, reply, sys.stdout.buffer)
        except KeyboardInterrupt:
            output.info(
                f"\ndetached from job {reply.job_id}; it keeps running. "
                f"Watch: sky queue {reply.job_id}   stop: sky cancel {reply.job_id}"
            )
            return EXIT_INTERRUPTED
    for line in output.job_summary_lines(output.job_to_dict(final), sys.stderr):
        print(line, file=sys.stderr)
    return launch_exit_code(final)


def launch_exit_code(job: Any) -> int:
    """0 when the job SUCCEEDED; a one-task job exits with its task's code (as ``sky run``); else 1."""
    if job.state == scheduler_pb2.JOB_STATE_SUCCEEDED:
        return EXIT_OK
    if len(job.tasks) == 1:
        return exit_code_for(job.tasks[0])
    return EXIT_FAILED


class PrefixWriter:
    """A binary sink that writes whole lines as ``(name) line`` to a shared output.

    Several tasks stream at once: each gets a PrefixWriter, and the shared lock keeps
    lines whole. With an empty prefix the bytes pass through unchanged (one-task jobs
    print exactly what the task printed, progress bars included).
    """

    def __init__(self, out: BinaryIO, prefix: str, lock: threading.Lock) -> None:
        self.out, self.prefix, self.lock = out, prefix.encode(), lock
        self._partial = b""

    def write(self, data: bytes) -> int:
        """Buffer ``data``; emit every complete line with the prefix."""
        if not self.prefix:
            with self.lock:
                self.out.write(data)
                self.out.flush()
            return len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if lines:
            with self.lock:
                self.out.write(b"".join(self.prefix + ln + b"\n" for ln in lines))
                self.out.flush()
        return len(data)

    def flush(self) -> None:
        """Lines are flushed as they complete; a partial line waits for close()."""

    def close(self) -> None:
        """Emit a last line that had no newline."""
        if self._partial:
            with self.lock:
                self.out.write(self.prefix + self._partial + b"\n")
                self.out.flush()
            self._partial = b""


def watch_job(client: SchedulerClient, reply: Any, out: BinaryIO) -> Any:
    """Stream each task's output as it starts; return the Job once every task has ended.

    The job's events (WatchEvents, resumed from the last seq when the stream is
    reopened) say when a task starts and when it ends; each started task gets a thread
    that follows its logs across attempts. Only running tasks hold a stream, so a wide
    DAG costs as many streams as it has tasks running at once.
    """
    names = {t.task_id: t.spec.name for t in reply.tasks}
    several = len(names) > 1
    lock = threading.Lock()
    followers: dict[str, threading.Thread] = {}
    failures: list[str] = []
    ended: set[str] = set()

    stopping = threading.Event()

    def pump(task_id: str, writer: PrefixWriter) -> None:
        try:
            follow(client, task_id, writer)  # type: ignore[arg-type]  # duck-typed binary sink
        except Exception as exc:  # a thread must not die with a traceback
            # After Ctrl-C the channel closes under the followers: that is not worth a word.
            if not stopping.is_set():
                message = exc.message if isinstance(exc, CliError) else f"{type(exc).__name__}: {exc}"
                failures.append(f"{names[task_id]}: cannot stream output: {message}")
        finally:
            writer.close()

    def start(task_id: str) -> None:
        if task_id in followers or task_id not in names:
            return
        writer = PrefixWriter(out, f"({names[task_id]}) " if several else "", lock)
        thread = threading.Thread(target=pump, args=(task_id, writer), name=f"logs-{task_id}", daemon=True)
        followers[task_id] = thread
        thread.start()

    try:
        _watch_events(client, reply.job_id, names, ended, start)
    except BaseException:
        stopping.set()
        raise
    for thread in followers.values():
        thread.join()
    for message in failures:
        output.error(message)
    return client.call("GetJob", scheduler_pb2.GetJobRequest(job_id=reply.job_id))


def _watch_events(client: SchedulerClient, job_id: str, names: dict[str, str], ended: set[str], start: Any) -> None:
    """Call ``start(task_id)`` for each task that runs; return once every task has ended."""
    seq = 0
    while len(ended) < len(names):
        events = client.stream("WatchEvents", scheduler_pb2.WatchEventsRequest(job_id=job_id, after_seq=seq))
        with contextlib.closing(events):
            for ev in events:
                seq = max(seq, ev.seq)
                if ev.attempt and (ev.state == common_pb2.TASK_STATE_RUNNING or ev.state in _TERMINAL):
                    start(ev.task_id)
                if ev.state in _TERMINAL:
                    ended.add(ev.task_id)
                elif ev.task_id in ended:
                    ended.discard(ev.task_id)  # not expected (terminal is final), but stay correct
                if len(ended) == len(names):
                    break
        if len(ended) < len(names):
            # The stream ended (deadline): re-check from the job itself, then resume.
            for task in all_tasks(client, job_id):
                if task.attempt:
                    start(task.task_id)
                if task.state in _TERMINAL:
                    ended.add(task.task_id)


def dryrun(job: plan.LaunchJob, archive: bytes) -> int:
    """Print the plan (tasks in dependency order) and, when the broker can rank offers, the
    chosen offer and runners-up per task. Submits nothing.

    Exits 1 when some task fits no offer of the catalog (the broker's reasons are printed),
    as the real launch would fail it at once; else 0.
    """
    rows = plan.plan_rows(job)
    workdir = f"; workdir {job.workdir} ({len(archive) / 1024:.1f} KiB packed)" if job.workdir else ""
    print(f"plan of job {job.name or '(unnamed)'} from {job.source}: {len(rows)} task(s){workdir}")
    output.print_table(("#", "TASK", "DEPENDS ON", "PRIORITY", "RETRIES", "RESOURCES"), rows)
    ranked = rank_offers(job)
    if ranked is None:
        print("offers: not shown; they appear here once the broker can rank them (ResourceBroker.Optimize)")
        output.info("dry run: nothing was submitted")
        return EXIT_OK
    print("offers (cheapest first):")
    for line in ranked.lines:
        print(line)
    output.info(f"offers ranked by the broker in {ranked.seconds * 1000:.1f} ms ({ranked.calls} Optimize call(s))")
    output.info("dry run: nothing was submitted")
    if ranked.refused:
        output.error(f"{', '.join(ranked.refused)}: no offer of the catalog can run it (reasons above)")
        return EXIT_FAILED
    return EXIT_OK


@dataclass
class RankedPlan:
    """What ``rank_offers`` found: printable lines, refused tasks, Optimize time and calls."""

    lines: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    seconds: float = 0.0
    calls: int = 0


def rank_offers(job: plan.LaunchJob) -> RankedPlan | None:
    """The broker's ranked offers per task, or None when it cannot rank them.

    Per task, Optimize over enabled providers gives the offer a launch would take. When no
    enabled provider can run the task (or a disabled one is cheaper), a second call with
    include_disabled shows what the catalog holds, marked "provider disabled" (``sky check``
    says how to enable it). When nothing in the catalog fits, the broker's rejections say why.
    """
    from dataclasses import replace

    import grpc

    from styx.common.clients import open_channel
    from styx.v1 import broker_pb2, broker_pb2_grpc
    from styx_cli.config import resolve_target
    from styx_cli.errors import rpc_error_message

    if not hasattr(broker_pb2, "OptimizeRequest"):
        return None
    target = resolve_target()
    if not target.broker:
        output.info("no broker endpoint configured (STYX_BROKER_ENDPOINT); offers cannot be ranked")
        return None
    channel = open_channel(target.broker, target.token, tls_ca=target.tls_ca, plaintext=target.plaintext)
    result = RankedPlan()
    try:
        stub = broker_pb2_grpc.ResourceBrokerStub(channel)
        validated = plan.validate(job.tasks, job.source)
        width = max(len(s.name) for s in validated)

        def optimize(resources: Any, include_disabled: bool, num_nodes: int = 1) -> Any:
            request = broker_pb2.OptimizeRequest(
                resources=resources, num_nodes=num_nodes, limit=OFFERS_SHOWN, include_disabled=include_disabled
            )
            started = time.perf_counter()
            try:
                return stub.Optimize(request, timeout=OPTIMIZE_TIMEOUT_S)
            finally:
                result.seconds += time.perf_counter() - started
                result.calls += 1

        for spec, entry in zip(validated, job.tasks, strict=True):
            resources = plan.task_to_pb(replace(entry, spec=spec)).resources
            try:
                live = optimize(resources, False, spec.num_nodes)
                whatif = optimize(resources, True, spec.num_nodes)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return None
                message = rpc_error_message(err.code().name, err.details() or "", "broker", target.broker).message
                result.lines.append(f"  {spec.name:<{width}}  cannot rank: {message}")
                result.refused.append(spec.name)
                continue
            result.lines += task_offer_lines(spec.name, width, live, whatif)
            if not live.offers and not whatif.offers:
                result.refused.append(spec.name)
        return result
    finally:
        channel.close()


def offer_lines(name: str, width: int, answer: Any, whatif: bool = False) -> list[str]:
    """Lines for one task's Optimize answer: chosen offer, runners-up, or why none fits.

    ``whatif``: the answer includes disabled providers (include_disabled); their offers are
    marked, and the first one is "cheapest", not "chosen" (a launch cannot use it now).
    """
    if not answer.offers:
        return rejection_lines(name, width, answer)
    lines = []
    for i, ranked in enumerate(list(answer.offers)[:OFFERS_SHOWN]):
        disabled = whatif and not ranked.provider_enabled
        label = "runner-up" if i else ("cheapest" if whatif else "chosen")
        mark = f" ({ranked.offer.provider} disabled: see sky check)" if disabled else ""
        lines.append(f"  {'' if i else name:<{width}}  {label}: {plan.offer_text(ranked)}{mark}")
    return lines


# Rejections shown for a task no offer fits (the broker sends the closest misses first).
REJECTIONS_SHOWN = 8
# How the broker marks an offer a launch would pass over now (styx.broker.launch_order).
SKIPPED_PREFIX = "skipped now: "
# How it marks a family the defaults (x86_64, general-purpose for CPU-only) excluded although
# it is cheaper than the chosen offer (styx.broker.optimizer.SKIPPED_BY_DEFAULT).
DEFAULT_PREFIX = "skipped by default: "
# Families skipped by default shown per task; the rest are counted.
DEFAULT_SKIPS_SHOWN = 3


def rejection_lines(name: str, width: int, answer: Any) -> list[str]:
    """``no offer fits: <reason>`` and, when the broker gave several, one indented line each."""
    rejections = list(answer.rejections)
    if len(rejections) <= 1:
        reason = f"{rejections[0].family}: {rejections[0].reason}" if rejections else "no offer matches"
        return [f"  {name:<{width}}  no offer fits: {output.one_line(reason, 160)}"]
    wanted = f" ({answer.request_summary})" if answer.request_summary else ""
    lines = [f"  {name:<{width}}  no offer fits{wanted}:"]
    for rej in rejections[:REJECTIONS_SHOWN]:
        lines.append(f"  {'':<{width}}    {rej.family}: {output.one_line(rej.reason, 140)}")
    if len(rejections) > REJECTIONS_SHOWN:
        lines.append(f"  {'':<{width}}    ... and {len(rejections) - REJECTIONS_SHOWN} more")
    return lines


def task_offer_lines(name: str, width: int, live: Any, whatif: Any) -> list[str]:
    """Lines of one task from the enabled-only answer (``live``) and the what-if one.

    - an enabled offer exists: the chosen one and runners-up; plus, when a disabled
      provider is cheaper, that offer as a hint;
    - only disabled providers fit: say so, then their offers ("cheapest", runners-up);
    - nothing fits: the broker's reasons (from the what-if answer, which are about the
      catalog and not merely about disabled providers).
    """
    if live.offers:
        lines = offer_lines(name, width, live)
        # Offers the launch passes over now (cooling down, at their limit), as the broker says.
        pad = f"  {'':<{width}}  "
        skipped = [r for r in live.rejections if r.reason.startswith(SKIPPED_PREFIX)]
        for rej in skipped[:REJECTIONS_SHOWN]:
            why = rej.reason.removeprefix(SKIPPED_PREFIX)
            lines.append(f"{pad}{SKIPPED_PREFIX}{rej.family}: {output.one_line(why, 140)}")
        # Cheaper families the defaults passed over, so a user sees what to name to get them.
        by_default = [r for r in live.rejections if r.reason.startswith(DEFAULT_PREFIX)]
        for rej in by_default[:DEFAULT_SKIPS_SHOWN]:
            why = rej.reason.removeprefix(DEFAULT_PREFIX)
            lines.append(f"{pad}{DEFAULT_PREFIX}{rej.family}: {output.one_line(why, 140)}")
        if len(by_default) > DEFAULT_SKIPS_SHOWN:
            lines.append(
                f"{pad}... and {len(by_default) - DEFAULT_SKIPS_SHOWN} more cheaper families skipped by default"
            )
        best = whatif.offers[0] if whatif.offers else None
        if (
            best is not None
            and not best.provider_enabled
            and (best.total_hourly_price < live.offers[0].total_hourly_price - 1e-9)
        ):
            lines.append(
                f"  {'':<{width}}  cheaper on a disabled provider: {plan.offer_text(best)} "
                f"({best.offer.provider}: see sky check)"
            )
        return lines
    if whatif.offers:
        providers = sorted({r.offer.provider for r in whatif.offers})
        note = f"  {name:<{width}}  no enabled provider can run it now; enable {', '.join(providers)} (sky check)"
        return [note, *offer_lines("", width, whatif, whatif=True)]
    return rejection_lines(name, width, whatif)
