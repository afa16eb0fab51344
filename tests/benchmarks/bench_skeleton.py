"""Walking-skeleton benchmark on the embedded default (local plane, SQLite, local provider).

Run: ``python tests/benchmarks/bench_skeleton.py`` (add ``--tasks 200`` etc. to change sizes).
Prints figures; asserts nothing. It starts its own control plane in a temporary STYX_HOME
and stops it at the end.

Measured:
- submit -> process-start latency, p50/p99: the task's first line is bash's $EPOCHREALTIME,
  compared with the client's clock just before SubmitJob (same machine, same clock);
- submit throughput, unary (one SubmitJob per task) and batched (one SubmitJob of N tasks);
  those tasks ask for an infra no provider has, so they end FAILED in the broker without
  running anything, which keeps the machine free for the measurement;
- `sky status` wall time with the control plane up (median of runs);
- idle RSS of each service process and of the local agent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _agent_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "styx.agent"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks for the latency figure")
    parser.add_argument("--unary", type=int, default=1000, help="tasks submitted one per call")
    parser.add_argument("--batch", type=int, default=10000, help="tasks submitted in one call")
    parser.add_argument("--status-runs", type=int, default=10)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="styx-bench-"))
    os.environ["STYX_HOME"] = str(home)
    for name in ("STYX_ENDPOINT", "STYX_TOKEN", "STYX_TOKEN_FILE"):
        os.environ.pop(name, None)

    from styx import localplane
    from styx.common.clients import open_channel
    from styx.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

    t0 = time.perf_counter()
    plane = localplane.start(home)
    print(f"control plane start: {time.perf_counter() - t0:.2f} s (home {home})")
    stub = scheduler_pb2_grpc.SchedulerStub(open_channel(plane.scheduler, plane.token))

    def submit(tasks: list[common_pb2.TaskSpec]) -> scheduler_pb2.SubmitJobResponse:
        job = scheduler_pb2.JobSpec(tasks=tasks)
        return stub.SubmitJob(scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=job), timeout=120)

    def run_and_read(spec: common_pb2.TaskSpec) -> tuple[float, bytes]:
        sent = time.time()
        task_id = submit([spec]).tasks[0].task_id
        out = b"".join(
            c.data for c in stub.StreamLogs(scheduler_pb2.StreamLogsRequest(task_id=task_id, follow=True), timeout=60)
        )
        return sent, out

    try:
        # Warm-up: the first task waits for the local node to boot; not counted.
        sent, out = run_and_read(common_pb2.TaskSpec(run="echo warm"))
        print(f"first task (includes local node boot): {time.time() - sent:.2f} s, output {out!r}")
        rss = {svc: _rss_mb(pid) for svc, pid in plane.pids.items()}
        rss.update({f"agent[{i}]": _rss_mb(pid) for i, pid in enumerate(_agent_pids())})

        latencies = []
        for _ in range(args.tasks):
            sent, out = run_and_read(common_pb2.TaskSpec(run="echo $EPOCHREALTIME"))
            started = float(out.split()[0].decode().replace(",", "."))
            latencies.append((started - sent) * 1000)
        print(
            f"submit->start latency over {args.tasks} tasks: p50 {_pct(latencies, 0.5):.1f} ms, "
            f"p99 {_pct(latencies, 0.99):.1f} ms, mean {statistics.fmean(latencies):.1f} ms (target p50 <= 100 ms)"
        )

        nowhere = common_pb2.ResourceRequest(infra="local/nowhere")
        t0 = time.perf_counter()
        for _ in range(args.unary):
            submit([common_pb2.TaskSpec(run="true", resources=nowhere)])
        unary = args.unary / (time.perf_counter() - t0)
        print(f"unary submit: {unary:,.0f} tasks/s over {args.unary} calls")

        specs = [common_pb2.TaskSpec(name=f"b{i}", run="true", resources=nowhere) for i in range(args.batch)]
        t0 = time.perf_counter()
        submit(specs)
        batched = args.batch / (time.perf_counter() - t0)
        print(f"batched submit: {batched:,.0f} tasks/s ({args.batch} tasks in one call; target >= 5,000/s)")

        time.sleep(2)
        sky = [sys.executable, "-m", "styx_cli", "status"]
        walls = []
        for _ in range(args.status_runs):
            t0 = time.perf_counter()
            subprocess.run(sky, check=True, capture_output=True)
            walls.append((time.perf_counter() - t0) * 1000)
        print(
            f"`sky status` wall: median {statistics.median(walls):.0f} ms, max {max(walls):.0f} ms "
            f"over {args.status_runs} runs, {args.tasks + args.unary + args.batch + 1} tasks stored (target <= 300 ms)"
        )
        print("idle RSS after start-up (MB, target <= 80 each): " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))
        after = {svc: _rss_mb(pid) for svc, pid in plane.pids.items()}
        print("RSS after the run (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in after.items()))
    finally:
        localplane.stop(home)


if __name__ == "__main__":
    main()
