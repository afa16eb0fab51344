"""Cancel benchmark (issue 9): cancelling a 100,000-task job. Prints figures; asserts nothing.

Run: ``python tests/benchmarks/bench_cancel.py`` (``--tasks N``, ``--placed N``, ``--db-url``).

The scheduler core on SQLite (or the PostgreSQL of ``--db-url``) without a broker, as the
store is what cancelling costs: one job of N tasks, the first ``--placed`` of them marked
SCHEDULED on a node (so they owe a Cancellation to their agent), then one ``cancel_job``.
Target: under a second for 100,000 tasks, in one transaction. Printed beside it: the
same store's cost of one trivial committed transaction, the floor of any write.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy import event, text, update


def main() -> None:
    """Submit one big job, place part of it, cancel it, print the timings."""
    from styx.common.store import make_engine
    from styx.scheduler import tables as t
    from styx.scheduler.core import Scheduler
    from styx.scheduler.model import TaskSpec

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--placed", type=int, default=2_000)
    parser.add_argument("--db-url", default="")
    args = parser.parse_args()
    url = args.db_url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='styx-bench-cancel-')) / 'scheduler.db'}"
    engine = make_engine(url)
    sched = Scheduler(engine, None)
    specs = [TaskSpec(name=f"t{i}", run="true") for i in range(args.tasks)]
    t0 = time.perf_counter()
    job_id, records = sched.submit_job(f"bench-{time.time_ns()}", "big", specs)
    print(f"submitted {args.tasks:,} tasks in {time.perf_counter() - t0:.2f} s")
    placed = [r.task_id for r in records[: args.placed]]
    with engine.begin() as conn:
        for i in range(0, len(placed), 500):
            conn.execute(
                update(t.tasks)
                .where(t.tasks.c.task_id.in_(placed[i : i + 500]))
                .values(state="SCHEDULED", attempt=1, node_id="n1")
            )
    t0 = time.perf_counter()
    for _ in range(20):
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
    floor_ms = (time.perf_counter() - t0) / 20 * 1000
    commits = [0]
    event.listen(engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    t0, c0 = time.perf_counter(), time.process_time()
    job = sched.cancel_job(job_id)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU time of this process (SQLite runs in it) is what a busy shared machine cannot inflate.
    print(
        f"cancel_job of {args.tasks:,} tasks ({len(placed):,} placed): {took * 1000:.0f} ms "
        f"({cpu * 1000:.0f} ms CPU here; load average {os.getloadavg()[0]:.1f}) in "
        f"{commits[0]} transaction(s) -> {job.task_counts} (target < 1000 ms; "
        f"floor: one empty transaction {floor_ms:.2f} ms)"
    )


if __name__ == "__main__":
    main()
