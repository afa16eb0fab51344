"""Everything the CLI prints: messages, task rows, tables, JSON.

Pure formatting functions (``task_to_dict``, ``task_row``, ``format_duration`` ...) are
unit-tested without sockets. Tables are plain aligned text with ANSI colours on a terminal
(``NO_COLOR`` turns them off): fast to import and to print.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any, TextIO

STATE_STYLES = {
    "UP": "green",
    "INIT": "yellow",
    "DOWN": "dim",
    "PENDING": "yellow",
    "SCHEDULED": "blue",
    "RUNNING": "cyan",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "SKIPPED": "dim",
}
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"})
_ANSI = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "dim": "2",
    "bold": "1",
}


def use_color(stream: TextIO) -> bool:
    """Colour only for terminals, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, style: str, stream: TextIO) -> str:
    """Wrap ``text`` in an ANSI colour when ``stream`` is a terminal."""
    code = _ANSI.get(style)
    if not code or not use_color(stream):
        return text
    return f"\033[{code}m{text}\033[0m"


def error(message: str) -> None:
    """Print ``error: <message>`` on stderr (the message may hold a second, indented line)."""
    print(f"{paint('error:', 'red', sys.stderr)} {message}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    """A progress note on stderr, so stdout carries only the task's output and requested data."""
    print(paint(message, "dim", sys.stderr), file=sys.stderr, flush=True)


def state_name(value: int | str) -> str:
    """ "SUCCEEDED" for TaskState 4 or "TASK_STATE_SUCCEEDED"."""
    if isinstance(value, int):
        from styx.v1 import common_pb2

        return common_pb2.TaskState.Name(value).removeprefix("TASK_STATE_")  # type: ignore[arg-type]
    return value.removeprefix("TASK_STATE_")


def _ts(message: Any, name: str) -> float | None:
    """Seconds of a Timestamp field, or None when unset."""
    if not message.HasField(name):
        return None
    ts = getattr(message, name)
    return ts.seconds + ts.nanos / 1e9


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def task_to_dict(task: Any) -> dict[str, Any]:
    """A styx.v1.Task as plain JSON-able data (what ``sky status --json`` prints)."""
    spec = task.spec
    res = spec.resources
    # Multi-node tasks also list their ranks (rank order); one-node tasks keep their shape.
    gang: dict[str, Any] = {}
    if task.ranks:
        gang["num_nodes"] = spec.num_nodes
        gang["ranks"] = [
            {
                "node_id": r.node_id,
                "address": r.address,
                "gpu_indices": list(r.gpu_indices),
                "state": state_name(r.state),
                "exit_code": r.exit_code if r.has_exit_code else None,
            }
            for r in task.ranks
        ]
    return {
        **gang,
        "task_id": task.task_id,
        "job_id": task.job_id,
        "job_name": task.job_name,
        "name": spec.name,
        "state": state_name(task.state),
        "attempt": task.attempt,
        "node_id": task.node_id,
        "gpu_indices": list(task.gpu_indices),
        "exit_code": task.exit_code if task.has_exit_code else None,
        "failure_reason": task.failure_reason,
        "run": spec.run,
        "priority": spec.priority,
        "resources": {
            "cpus": res.cpus,
            "cpus_at_least": res.cpus_at_least,
            "memory_gib": res.memory_gib,
            "memory_at_least": res.memory_at_least,
            "accelerators": [f"{a.name}:{a.count}" for a in res.accelerators],
        },
        "created_at": _iso(_ts(task, "created_at")),
        "scheduled_at": _iso(_ts(task, "scheduled_at")),
        "started_at": _iso(_ts(task, "started_at")),
        "finished_at": _iso(_ts(task, "finished_at")),
        "retry_at": _iso(_ts(task, "retry_at")),
        "depends_on": list(spec.depends_on),
        # The scheduler sends each secret's key with "<redacted>", never its value.
        "secrets": dict(spec.secrets),
        "_created": _ts(task, "created_at"),
        "_started": _ts(task, "started_at"),
        "_finished": _ts(task, "finished_at"),
    }


def public(task: dict[str, Any]) -> dict[str, Any]:
    """Drop the private float timestamps kept for table formatting."""
    return {k: v for k, v in task.items() if not k.startswith("_")}


def format_duration(seconds: float | None) -> str:
    """Short human duration: "0.4s", "12s", "3m05s", "2h01m", "3d04h"; "-" for None."""
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def one_line(text: str, width: int = 60) -> str:
    """Collapse whitespace and cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def task_row(task: dict[str, Any], now: float) -> list[str]:
    """Cells of one ``sky status`` row: ID NAME STATE ATTEMPT EXIT AGE DURATION NODE DETAIL."""
    created, started, finished = task["_created"], task["_started"], task["_finished"]
    duration = None
    if started is not None:
        duration = (finished if finished is not None else now) - started
    exit_code = task["exit_code"]
    # The reason only explains an ended task; a running one shows what it runs.
    ended = task["state"] in ("FAILED", "CANCELLED", "SKIPPED")
    detail = task["failure_reason"] if ended and task["failure_reason"] else task["run"]
    return [
        task["task_id"],
        task["name"],
        task["state"],
        str(task["attempt"]) if task["attempt"] else "-",
        "-" if exit_code is None else str(exit_code),
        format_duration(now - created) if created is not None else "-",
        format_duration(duration),
        task["node_id"] or "-",
        one_line(detail),
    ]


TASK_COLUMNS = ("ID", "NAME", "STATE", "ATTEMPT", "EXIT", "AGE", "DURATION", "NODE", "DETAIL")
# Order of states in task counts ("3 SUCCEEDED, 1 RUNNING"): the lifecycle's.
STATE_ORDER = ("PENDING", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED")


def aggregate_state(counts: dict[str, int]) -> str:
    """A job's state from its tasks' counts, by the scheduler's rule (stats.job_state)."""
    total = sum(counts.values())
    if total and counts.get("SUCCEEDED", 0) == total:
        return "SUCCEEDED"
    if total and sum(counts.get(s, 0) for s in TERMINAL_STATES) == total:
        return "FAILED" if counts.get("FAILED", 0) or counts.get("SKIPPED", 0) else "CANCELLED"
    if counts.get("PENDING", 0) == total:
        return "PENDING"
    return "RUNNING"


def counts_text(counts: dict[str, int]) -> str:
    """ "2 RUNNING, 3 SUCCEEDED" in lifecycle order (unknown states last)."""
    order = {s: i for i, s in enumerate(STATE_ORDER)}
    items = sorted((k, v) for k, v in counts.items() if v)
    items.sort(key=lambda kv: order.get(kv[0], len(order)))
    return ", ".join(f"{v} {k}" for k, v in items) or "no tasks"


def group_by_job(tasks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Tasks (newest first, as ListTasks returns them) grouped per job.

    Jobs come newest first; each job's tasks in submission order. The job header is
    built from the tasks shown (state aggregated by the scheduler's rule).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        groups.setdefault(task["job_id"], []).append(task)
    out = []
    for job_id, members in groups.items():
        members = list(reversed(members))
        counts: dict[str, int] = {}
        for task in members:
            counts[task["state"]] = counts.get(task["state"], 0) + 1
        created = [t["_created"] for t in members if t["_created"] is not None]
        header = {
            "job_id": job_id,
            "name": members[0].get("job_name") or "",
            "state": aggregate_state(counts),
            "task_counts": counts,
            "_created": min(created) if created else None,
        }
        out.append((header, members))
    return out


def print_tasks(tasks: list[dict[str, Any]], as_json: bool) -> None:
    """Print tasks grouped by job (a job line, then its tasks) or, with ``as_json``, a JSON list."""
    if as_json:
        print(json.dumps([public(t) for t in tasks], indent=2))
        return
    if not tasks:
        info("no tasks yet; submit one with: sky launch -- echo hello")
        return
    now = time.time()
    rows: list[list[str]] = []
    styles: list[str] = []
    ends: list[bool] = []
    for header, members in group_by_job(tasks):
        created = header["_created"]
        rows.append(
            [
                header["job_id"],
                header["name"],
                header["state"],
                "",
                "",
                format_duration(now - created) if created is not None else "-",
                "",
                "",
                f"job: {counts_text(header['task_counts'])}",
            ]
        )
        styles.append("bold")
        ends.append(False)
        for task in members:
            row = task_row(task, now)
            row[0] = f"  {row[0]}"
            rows.append(row)
            styles.append("")
            ends.append(False)
        ends[-1] = True
    _print_table(TASK_COLUMNS, rows, state_col=2, row_styles=styles, section_ends=ends)


def job_to_dict(job: Any) -> dict[str, Any]:
    """A styx.v1.Job as plain JSON-able data (``sky queue --json``); tasks only when present."""
    from styx.v1 import scheduler_pb2

    counts = dict(job.task_counts)
    data: dict[str, Any] = {
        "job_id": job.job_id,
        "name": job.name,
        "state": scheduler_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_"),
        "task_counts": counts,
        "tasks_total": sum(counts.values()),
        "created_at": _iso(_ts(job, "created_at")),
        "_created": _ts(job, "created_at"),
    }
    if job.tasks:
        data["tasks"] = [task_to_dict(t) for t in job.tasks]
    return data


def public_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job dict without the private float timestamps (its tasks' too)."""
    out = public(job)
    if "tasks" in out:
        out["tasks"] = [public(t) for t in out["tasks"]]
    return out


JOB_COLUMNS = ("JOB", "NAME", "STATE", "TASKS", "BY STATE", "AGE")
JOB_TASK_COLUMNS = ("ID", "NAME", "STATE", "ATTEMPT", "NODE", "EXIT", "STARTED", "DURATION", "REASON")


def job_row(job: dict[str, Any], now: float) -> list[str]:
    """Cells of one ``sky queue`` row: JOB NAME STATE TASKS BY-STATE AGE."""
    created = job["_created"]
    return [
        job["job_id"],
        job["name"] or "-",
        job["state"],
        str(job["tasks_total"]),
        counts_text(job["task_counts"]),
        format_duration(now - created) if created is not None else "-",
    ]


def job_task_row(task: dict[str, Any], now: float) -> list[str]:
    """Cells of one ``sky queue JOB`` row: ID NAME STATE ATTEMPT NODE EXIT STARTED DURATION REASON."""
    started, finished = task["_started"], task["_finished"]
    duration = None if started is None else (finished if finished is not None else now) - started
    exit_code = task["exit_code"]
    return [
        task["task_id"],
        task["name"],
        task["state"],
        str(task["attempt"]) if task["attempt"] else "-",
        task["node_id"] or "-",
        "-" if exit_code is None else str(exit_code),
        "-" if started is None else f"{format_duration(now - started)} ago",
        format_duration(duration),
        one_line(task["failure_reason"], 70) if task["failure_reason"] else "",
    ]


def print_jobs(jobs: list[dict[str, Any]], as_json: bool) -> None:
    """``sky queue``: jobs, newest first, as a table or a JSON list."""
    if as_json:
        print(json.dumps([public_job(j) for j in jobs], indent=2))
        return
    if not jobs:
        info("no jobs yet; submit one with: sky launch task.yaml")
        return
    now = time.time()
    _print_table(JOB_COLUMNS, [job_row(j, now) for j in jobs], state_col=2)


def print_job(job: dict[str, Any], as_json: bool) -> None:
    """``sky queue JOB``: a header line, then the job's tasks in submission order."""
    if as_json:
        print(json.dumps(public_job(job), indent=2))
        return
    now = time.time()
    created = job["_created"]
    age = format_duration(now - created) if created is not None else "-"
    state = paint(job["state"], STATE_STYLES.get(job["state"], ""), sys.stdout)
    print(
        f"job {job['job_id']} {job['name'] or '-'}: {state}, {job['tasks_total']} task(s): "
        f"{counts_text(job['task_counts'])}; submitted {age} ago"
    )
    _print_table(JOB_TASK_COLUMNS, [job_task_row(t, now) for t in job.get("tasks", [])], state_col=2)


def job_summary_lines(job: dict[str, Any], stream: TextIO) -> list[str]:
    """What ``sky launch`` prints once the job ended: the job's line, then one per task."""
    tasks = job.get("tasks", [])
    state = paint(job["state"], STATE_STYLES.get(job["state"], ""), stream)
    lines = [f"job {job['job_id']} ({job['name'] or '-'}): {state}; {counts_text(job['task_counts'])}"]
    width = max((len(t["name"]) for t in tasks), default=0)
    for task in tasks:
        started, finished = task["_started"], task["_finished"]
        duration = None if started is None or finished is None else finished - started
        state_cell = paint(f"{task['state']:<9}", STATE_STYLES.get(task["state"], ""), stream)
        parts = [f"  {task['name']:<{width}}", state_cell]
        if task["exit_code"] is not None:
            parts.append(f"exit {task['exit_code']}")
        if duration is not None:
            parts.append(format_duration(duration))
        if task["attempt"] > 1:
            parts.append(f"attempt {task['attempt']}")
        parts.append(task["task_id"])
        if task["failure_reason"] and task["state"] != "SUCCEEDED":
            # Long enough for the why and the fix (an SSH host's refused key, say); one line.
            parts.append(one_line(task["failure_reason"], 400))
        lines.append("  ".join(parts))
    return lines


def stats_to_dict(stats: Any) -> dict[str, Any]:
    """A styx.v1.Stats as plain data (what ``sky stats --json`` prints)."""
    return {
        "tasks_by_state": dict(sorted(stats.tasks_by_state.items())),
        "tasks_total": sum(stats.tasks_by_state.values()),
        "jobs_total": stats.jobs_total,
        "queue_wait_p50_s": stats.queue_wait_p50_s,
        "queue_wait_p99_s": stats.queue_wait_p99_s,
        "run_time_p50_s": stats.run_time_p50_s,
        "run_time_p99_s": stats.run_time_p99_s,
        "computed_at": _iso(_ts(stats, "computed_at")),
        "throughput_per_s": stats.throughput_per_s,
        "by_priority": [
            {
                "priority": p.priority,
                "tasks_by_state": dict(sorted(p.tasks_by_state.items())),
                "tasks_total": sum(p.tasks_by_state.values()),
                "queue_wait_p50_s": p.queue_wait_p50_s,
                "queue_wait_p99_s": p.queue_wait_p99_s,
            }
            for p in stats.by_priority
        ],
    }


def stats_rows(stats: dict[str, Any]) -> list[list[str]]:
    """Rows of the ``sky stats`` table: one per state, then totals and latencies."""
    rows = [[state_name(name), str(count)] for name, count in stats["tasks_by_state"].items()]
    rows += [
        ["tasks (total)", str(stats["tasks_total"])],
        ["jobs (total)", str(stats["jobs_total"])],
        [
            "queue wait p50 / p99",
            f"{format_duration(stats['queue_wait_p50_s'])} / {format_duration(stats['queue_wait_p99_s'])}",
        ],
        [
            "run time p50 / p99",
            f"{format_duration(stats['run_time_p50_s'])} / {format_duration(stats['run_time_p99_s'])}",
        ],
    ]
    rows.append(["throughput (last minute)", f"{stats['throughput_per_s']:.2f} tasks/s"])
    for prio in stats.get("by_priority", []):
        counts = {state_name(k): v for k, v in prio["tasks_by_state"].items()}
        rows.append(
            [
                f"priority {prio['priority']}",
                f"{counts_text(counts)}; queue wait p50 / p99 {format_duration(prio['queue_wait_p50_s'])} / "
                f"{format_duration(prio['queue_wait_p99_s'])}",
            ]
        )
    return rows


def print_stats(stats: dict[str, Any], as_json: bool) -> None:
    """Print scheduler statistics as a table or JSON."""
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    _print_table(("METRIC", "VALUE"), stats_rows(stats), state_col=0)


def print_kv(title: str, rows: list[list[str]]) -> None:
    """A small two-or-more-column table with a title (``sky local status``)."""
    _print_table(tuple(rows[0]), rows[1:], state_col=-1, title=title)


def print_table(columns: tuple[str, ...], rows: list[list[str]]) -> None:
    """A plain table on stdout (no state colouring)."""
    _print_table(columns, rows, state_col=-1)


def print_state_table(columns: tuple[str, ...], rows: list[list[str]], state_col: int, title: str) -> None:
    """A titled table whose state column is coloured."""
    _print_table(columns, rows, state_col, title)


def _print_table(
    columns: tuple[str, ...],
    rows: list[list[str]],
    state_col: int,
    title: str | None = None,
    row_styles: list[str] | None = None,
    section_ends: list[bool] | None = None,
) -> None:
    """Print an aligned table: header, a rule, rows (blank line after section ends).

    Plain string formatting rather than rich's table layout, which took ~150 ms for 200
    rows and made ``sky status`` miss its 300 ms budget. Off a terminal lines are up to 200
    columns (greppable, one row per task); on one they fit the window by shortening the
    free-text columns with an ellipsis. Cells are printed as typed (no markup).
    """
    out = sys.stdout
    color = use_color(out)
    width = shutil.get_terminal_size((200, 24)).columns if out.isatty() else 200
    cells = [[str(c) for c in row] + [""] * (len(columns) - len(row)) for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(columns)]
    gap = "   "
    excess = sum(widths) + len(gap) * (len(widths) - 1) - width
    if excess > 0:
        keep = {"ID", "JOB", "STATE", "NAME", "SERVICE"}
        for i in sorted((i for i, h in enumerate(columns) if h not in keep), key=lambda i: -widths[i]):
            cut = min(excess, max(0, widths[i] - max(len(columns[i]), 8)))
            widths[i] -= cut
            excess -= cut
            if excess <= 0:
                break

    def fit(text: str, w: int) -> str:
        return (text if len(text) <= w else text[: max(0, w - 1)] + "\u2026").ljust(w)

    lines = []
    if title:
        lines.append(paint(title, "bold", out))
    header = gap.join(fit(h, widths[i]) for i, h in enumerate(columns)).rstrip()
    lines += [paint(header, "bold", out), "\u2500" * len(header)]
    for n, row in enumerate(cells):
        parts = [fit(cell, widths[i]) for i, cell in enumerate(row)]
        if color and 0 <= state_col < len(parts):
            # Colour the word only, so the ANSI codes do not upset the column padding.
            word = row[state_col]
            parts[state_col] = parts[state_col].replace(word, paint(word, STATE_STYLES.get(word, ""), out), 1)
        line = gap.join(parts).rstrip()
        style = row_styles[n] if row_styles else ""
        lines.append(paint(line, style, out) if style and color and state_col < 0 else line)
        if section_ends and section_ends[n] and n < len(cells) - 1:
            lines.append("")
    print("\n".join(lines))
