"""Read-side aggregates of the scheduler: job states and statistics."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from styx.common.timeutil import now
from styx.scheduler import tables as t
from styx.scheduler.model import CANCELLED, FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, TERMINAL, TaskRecord

# Latency percentiles look at the most recent tasks only, so stats stay cheap on big stores.
STATS_WINDOW = 10_000


@dataclass(frozen=True)
class JobView:
    """A job with its aggregate state and task counts (and tasks when asked for)."""

    job_id: str
    name: str
    state: str
    task_counts: dict[str, int]
    created_at: float
    tasks: tuple[TaskRecord, ...] = ()


@dataclass(frozen=True)
class PriorityStats:
    """Aggregates over the tasks of one priority."""

    priority: int
    tasks_by_state: dict[str, int]
    queue_wait_p50_s: float
    queue_wait_p99_s: float


@dataclass(frozen=True)
class Stats:
    """Aggregates over all tasks."""

    tasks_by_state: dict[str, int]
    jobs_total: int
    queue_wait_p50_s: float
    queue_wait_p99_s: float
    run_time_p50_s: float
    run_time_p99_s: float
    throughput_per_s: float = 0.0
    by_priority: tuple[PriorityStats, ...] = ()


def job_state(counts: dict[str, int]) -> str:
    """Aggregate a job's state from its tasks' states."""
    total = sum(counts.values())
    if total and counts.get(SUCCEEDED, 0) == total:
        return SUCCEEDED
    if total and sum(counts.get(s, 0) for s in TERMINAL) == total:
        return FAILED if counts.get(FAILED, 0) or counts.get(SKIPPED, 0) else CANCELLED
    if counts.get(PENDING, 0) == total:
        return PENDING
    return RUNNING


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def compute_stats(engine: Engine) -> Stats:
    """Counts by state (all tasks), percentiles over the latest STATS_WINDOW started tasks."""
    stamp = now()
    with engine.connect() as conn:
        by_prio_state = conn.execute(
            select(t.tasks.c.priority, t.tasks.c.state, func.count()).group_by(t.tasks.c.priority, t.tasks.c.state)
        ).all()
        jobs = int(conn.execute(select(func.count()).select_from(t.jobs)).scalar_one())
        rows = conn.execute(
            select(t.tasks.c.priority, t.tasks.c.created_at, t.tasks.c.started_at, t.tasks.c.finished_at)
            .where(t.tasks.c.started_at.is_not(None))
            .order_by(t.tasks.c.seq.desc())
            .limit(STATS_WINDOW)
        ).all()
        recent = int(
            conn.execute(
                select(func.count()).select_from(t.tasks).where(t.tasks.c.finished_at >= stamp - 60.0)
            ).scalar_one()
        )
    counts: dict[str, int] = {}
    prio_counts: dict[int, dict[str, int]] = {}
    for prio, state, n in by_prio_state:
        counts[state] = counts.get(state, 0) + int(n)
        prio_counts.setdefault(prio, {})[state] = int(n)
    waits: dict[int, list[float]] = {}
    for r in rows:
        waits.setdefault(r.priority, []).append(r.started_at - r.created_at)
    all_waits = [w for ws in waits.values() for w in ws]
    runs = [r.finished_at - r.started_at for r in rows if r.finished_at is not None]
    return Stats(
        tasks_by_state=counts,
        jobs_total=jobs,
        queue_wait_p50_s=percentile(all_waits, 0.5),
        queue_wait_p99_s=percentile(all_waits, 0.99),
        run_time_p50_s=percentile(runs, 0.5),
        run_time_p99_s=percentile(runs, 0.99),
        throughput_per_s=recent / 60.0,
        by_priority=tuple(
            PriorityStats(p, prio_counts[p], percentile(waits.get(p, []), 0.5), percentile(waits.get(p, []), 0.99))
            for p in sorted(prio_counts, reverse=True)
        ),
    )
