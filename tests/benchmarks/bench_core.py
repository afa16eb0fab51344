"""The provisioning core's figures (issue 9), each printed beside a floor measured in the same run.

Run: ``python tests/benchmarks/bench_core.py`` (the embedded default: local plane, SQLite,
local provider), or ``--replicas 2 --pg postgresql://...`` for two replicas of each
service on one PostgreSQL database (it must be empty; it is not dropped). Prints figures;
asserts nothing.

Floors: an empty unary RPC (gRPC health Check against the scheduler) and ``bash -c true``
process spawns per second, both on this machine now. Figures:
- unary SubmitJob with 8 concurrent clients (one-task jobs whose infra no provider has,
  so nothing runs): jobs/s and p50 latency;
- a chain link: one task's end to its successor's start, in a 40-task chain of ``true``;
- 10,000 trivial tasks end to end on the local provider (one node of 64 CPUs);
- broker RSS before and after importing the ~91k-offer catalog of ../shared/catalogs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench_skeleton import _pct, _rss_mb

ROOT = Path(__file__).resolve().parents[2]
# The shared catalogs sit next to the main checkout; a worktree is one level deeper.
CATALOGS = next(
    (p / "shared" / "catalogs" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared" / "catalogs").is_dir()),
    ROOT.parent / "shared" / "catalogs",
)


def spawn_floor(n: int = 300) -> float:
    """``bash -c true`` spawns per second."""
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run(["bash", "-c", "true"], check=True)
    return n / (time.perf_counter() - t0)


class Plane:
    """Endpoints, token and the broker's pids of whichever plane the run uses."""

    def __init__(
        self, scheduler: str, broker: str, token: str, broker_pids: list[int], stop: object, scheduler_pids: list[int]
    ) -> None:
        self.scheduler, self.broker, self.token, self.broker_pids, self.stop = (
            scheduler,
            broker,
            token,
            broker_pids,
            stop,
        )
        self.scheduler_pids = scheduler_pids


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds these processes used so far (a figure the machine's other
    load barely moves, unlike rates: this machine's cores are shared)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def local_plane(home: Path) -> Plane:
    """The embedded default, started like `sky` does."""
    from styx import localplane

    plane = localplane.start(home)
    return Plane(
        plane.scheduler,
        plane.broker,
        plane.token,
        [plane.pids["broker"]],
        lambda: localplane.stop(home),
        [plane.pids["scheduler"]],
    )


def replica_plane(home: Path, replicas: int, pg_url: str) -> Plane:
    """``replicas`` processes of each service on one PostgreSQL database."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import free_port, start_service, stop_process

    token = secrets.token_hex(16)
    env = {**os.environ, "STYX_HOME": str(home), "STYX_TOKEN": token, "STYX_LOG_LEVEL": "WARNING"}
    env.update(STYX_LOCAL_MAX_NODES="1", STYX_LOCAL_NODE_CPUS="64", STYX_LOCAL_NODE_MEMORY_GIB="64")
    ports = {f"{s}-{i}": free_port() for s in ("provisioner", "broker", "scheduler") for i in range(replicas)}

    def peers(service: str) -> str:
        return ",".join(f"127.0.0.1:{ports[f'{service}-{i}']}" for i in range(replicas))

    procs = []
    for service in ("provisioner", "broker", "scheduler"):
        for i in range(replicas):
            name = f"{service}-{i}"
            args = ["--port", str(ports[name]), "--db-url", pg_url]
            if service == "scheduler":
                args += ["--broker", peers("broker")]
            elif service == "broker":
                args += ["--provisioner", peers("provisioner"), "--replica-id", name]
            else:
                args += ["--scheduler", peers("scheduler"), "--broker", peers("broker"), "--replica-id", name]
            procs.append(start_service(f"styx.{service}", args, home / "logs", env=env, name=name))

    def stop() -> None:
        for proc in procs:
            stop_process(proc.proc)
        subprocess.run(["pkill", "-KILL", "-f", f"STYX_HOME={home}"], check=False)

    brokers = [p.proc.pid for p in procs if p.name.startswith("broker")]
    schedulers = [p.proc.pid for p in procs if p.name.startswith("scheduler")]
    return Plane(peers("scheduler"), peers("broker"), token, brokers, stop, schedulers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--pg", default="", help="PostgreSQL URL (an empty database) for --replicas > 1")
    parser.add_argument("--submits", type=int, default=2000, help="one-task jobs for the SubmitJob figure")
    parser.add_argument("--tasks", type=int, default=10000, help="trivial tasks for the end-to-end figure")
    parser.add_argument("--only", choices=["memory"], default="", help="measure only this figure")
    parser.add_argument("--catalogs", type=Path, default=CATALOGS, help="SkyPilot catalog tree to import")
    args = parser.parse_args()
    if args.replicas > 1 and not args.pg:
        parser.error("--replicas > 1 needs --pg")

    home = Path(tempfile.mkdtemp(prefix="styx-bench-core-"))
    os.environ["STYX_HOME"] = str(home)
    os.environ.update(STYX_LOCAL_NODE_CPUS="64", STYX_LOCAL_NODE_MEMORY_GIB="64")
    for name in ("STYX_ENDPOINT", "STYX_TOKEN", "STYX_TOKEN_FILE"):
        os.environ.pop(name, None)

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from styx.common.clients import open_channel
    from styx.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

    plane = local_plane(home) if args.replicas == 1 else replica_plane(home, args.replicas, args.pg)
    where = "embedded default (SQLite)" if args.replicas == 1 else f"{args.replicas} replicas each on PostgreSQL"
    print(f"plane: {where}; home {home}")
    channel = open_channel(plane.scheduler, plane.token)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    health = health_pb2_grpc.HealthStub(channel)

    def submit(tasks: list[common_pb2.TaskSpec], timeout: float = 300) -> scheduler_pb2.SubmitJobResponse:
        job = scheduler_pb2.JobSpec(tasks=tasks)
        return stub.SubmitJob(scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=job), timeout=timeout)

    def wait_job(job_id: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # task_limit=1: only the job's state is needed, not a page of its tasks.
            job = stub.GetJob(scheduler_pb2.GetJobRequest(job_id=job_id, task_limit=1), timeout=30)
            if job.state in (
                scheduler_pb2.JOB_STATE_SUCCEEDED,
                scheduler_pb2.JOB_STATE_FAILED,
                scheduler_pb2.JOB_STATE_CANCELLED,
            ):
                return
            time.sleep(0.5)  # poll gently, or the poll is part of the load
        raise TimeoutError(job_id)

    try:
        # ---- floors
        rpc = []
        for _ in range(500):
            t0 = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            rpc.append((time.perf_counter() - t0) * 1000)
        print(f"floor: empty unary RPC p50 {_pct(rpc, 0.5):.2f} ms; bash -c true {spawn_floor():,.0f} spawns/s")

        if args.only == "memory":
            args.submits = args.tasks = 0
        # ---- warm-up: the local node boots
        wait_job(submit([common_pb2.TaskSpec(run="true")]).job_id, timeout=120)

        # ---- unary SubmitJob, 8 concurrent clients
        nowhere = common_pb2.ResourceRequest(infra="local/nowhere")
        per_client = args.submits // 8
        lat: list[float] = []
        lock = threading.Lock()

        def client() -> None:
            own = scheduler_pb2_grpc.SchedulerStub(open_channel(plane.scheduler, plane.token))
            mine = []
            for _ in range(per_client):
                request = scheduler_pb2.SubmitJobRequest(
                    request_id=str(uuid.uuid4()),
                    job=scheduler_pb2.JobSpec(tasks=[common_pb2.TaskSpec(run="true", resources=nowhere)]),
                )
                t0 = time.perf_counter()
                own.SubmitJob(request, timeout=120)
                mine.append((time.perf_counter() - t0) * 1000)
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(8 if args.submits else 0)]
        cpu0 = cpu_s(plane.scheduler_pids)
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rate = len(lat) / (time.perf_counter() - t0)
        if lat:
            cpu_ms = (cpu_s(plane.scheduler_pids) - cpu0) * 1000 / len(lat)
            print(
                f"unary SubmitJob, 8 clients: {rate:,.0f} jobs/s, p50 {_pct(lat, 0.5):.1f} ms, "
                f"p99 {_pct(lat, 0.99):.1f} ms, scheduler CPU {cpu_ms:.2f} ms per job "
                f"(target >= 1,000/s; floor RPC p50 {_pct(rpc, 0.5):.2f} ms)"
            )

        # ---- chain link
        n = 40 if args.tasks else 2
        chain = [
            common_pb2.TaskSpec(name=f"l{i}", run="echo $EPOCHREALTIME", depends_on=[f"l{i - 1}"] if i else [])
            for i in range(n)
        ]
        job = submit(chain)
        wait_job(job.job_id)
        starts = []
        for task in job.tasks:
            out = b"".join(
                c.data for c in stub.StreamLogs(scheduler_pb2.StreamLogsRequest(task_id=task.task_id), timeout=30)
            )
            starts.append(float(out.split()[0].decode().replace(",", ".")))
        links = [(b - a) * 1000 for a, b in itertools.pairwise(starts)]
        print(
            f"chain link (task start to successor start, {n} tasks): p50 {_pct(links, 0.5):.1f} ms, "
            f"max {max(links):.1f} ms (target <= 5 ms)"
        )

        # ---- 10k trivial tasks end to end
        specs = [common_pb2.TaskSpec(name=f"t{i}", run="true") for i in range(args.tasks)]
        cpu0 = cpu_s(plane.scheduler_pids)
        t0 = time.perf_counter()
        if specs:
            job = submit(specs)
            wait_job(job.job_id, timeout=1800)
        e2e = args.tasks / (time.perf_counter() - t0)
        if specs:
            cpu_ms = (cpu_s(plane.scheduler_pids) - cpu0) * 1000 / args.tasks
            print(
                f"{args.tasks:,} trivial tasks end to end: {e2e:,.0f} tasks/s, scheduler CPU {cpu_ms:.2f} ms "
                f"per task (target >= 300/s; floor {spawn_floor(100):,.0f} bash spawns/s)"
            )

        # ---- broker memory with the full catalog
        before = [_rss_mb(p) for p in plane.broker_pids]
        if args.catalogs.is_dir():
            env = {**os.environ, "STYX_ENDPOINT": plane.scheduler, "STYX_TOKEN": plane.token}
            env["STYX_BROKER_ENDPOINT"] = plane.broker
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "styx_cli", "catalog", "import", str(args.catalogs)],
                env=env,
                capture_output=True,
                text=True,
            )
            took = time.perf_counter() - t0
            time.sleep(2)
            after = [_rss_mb(p) for p in plane.broker_pids]
            status = "ok" if done.returncode == 0 else f"failed: {done.stderr.strip()[-200:]}"
            print(
                f"broker RSS: {', '.join(f'{b:.0f}' for b in before)} MB idle, "
                f"{', '.join(f'{a:.0f}' for a in after)} MB with the catalog imported "
                f"(import {status}, {took:.1f} s; target <= 80 MB)"
            )
        else:
            print(f"broker RSS: {', '.join(f'{b:.0f}' for b in before)} MB idle (no {args.catalogs}: import skipped)")
    except grpc.RpcError as exc:
        print(f"benchmark aborted: {exc.code().name}: {exc.details()}")
    finally:
        plane.stop()  # type: ignore[operator]


if __name__ == "__main__":
    main()
