"""Everything the CLI prints: messages, task rows, tables, JSON.

Pure formatting functions (``task_to_dict``, ``task_row``, ``format_duration`` ...) are
unit-tested without sockets. rich is imported only inside the functions that print tables,
so ``sky version`` and ``sky --help`` stay fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

STATE_STYLES = {
    "PENDING": "yellow",
    "SCHEDULED": "blue",
    "RUNNING": "cyan",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "SKIPPED": "dim",
}
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"})
_ANSI = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36",
         "dim": "2", "bold": "1"}


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
    """"SUCCEEDED" for TaskState 4 or "TASK_STATE_SUCCEEDED"."""
    if isinstance(value, int):
        from styx.v1 import common_pb2

        value = common_pb2.TaskState.Name(value)
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
    return {
        "task_id": task.task_id,
        "job_id": task.job_id,
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
    """Cells of one ``sky status`` row: ID NAME STATE EXIT AGE DURATION NODE DETAIL."""
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
        "-" if exit_code is None else str(exit_code),
        format_duration(now - created) if created is not None else "-",
        format_duration(duration),
        task["node_id"] or "-",
        one_line(detail),
    ]


TASK_COLUMNS = ("ID", "NAME", "STATE", "EXIT", "AGE", "DURATION", "NODE", "DETAIL")


def print_tasks(tasks: list[dict[str, Any]], as_json: bool) -> None:
    """Print tasks as a table (rich) or, with ``as_json``, as a JSON list on stdout."""
    if as_json:
        print(json.dumps([public(t) for t in tasks], indent=2))
        return
    if not tasks:
        info("no tasks yet; submit one with: sky run -- echo hello")
        return
    now = time.time()
    rows = [task_row(t, now) for t in tasks]
    _print_table(TASK_COLUMNS, rows, state_col=2)


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
        # Newer schedulers also report throughput; older ones lack the field.
        **({"throughput_per_s": stats.throughput_per_s}
           if "throughput_per_s" in stats.DESCRIPTOR.fields_by_name else {}),
    }


def stats_rows(stats: dict[str, Any]) -> list[list[str]]:
    """Rows of the ``sky stats`` table: one per state, then totals and latencies."""
    rows = [[state_name(name), str(count)] for name, count in stats["tasks_by_state"].items()]
    rows += [
        ["tasks (total)", str(stats["tasks_total"])],
        ["jobs (total)", str(stats["jobs_total"])],
        ["queue wait p50 / p99", f"{format_duration(stats['queue_wait_p50_s'])} / "
                                 f"{format_duration(stats['queue_wait_p99_s'])}"],
        ["run time p50 / p99", f"{format_duration(stats['run_time_p50_s'])} / "
                               f"{format_duration(stats['run_time_p99_s'])}"],
    ]
    if "throughput_per_s" in stats:
        rows.append(["throughput", f"{stats['throughput_per_s']:.2f} tasks/s"])
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


def _print_table(columns: tuple[str, ...], rows: list[list[str]], state_col: int, title: str | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tty = sys.stdout.isatty()
    # Off a terminal rich would assume 80 columns and wrap ids; use a wide fixed width so
    # piped output stays one row per task and greppable.
    console = Console(width=None if tty else 200, no_color=not use_color(sys.stdout), highlight=False)
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in columns:
        table.add_column(name, no_wrap=name in ("ID", "STATE", "NAME", "SERVICE"), overflow="ellipsis")
    for row in rows:
        # Text, not markup strings: a command like "echo [red]" must print as typed.
        cells = [Text(cell) for cell in row]
        if 0 <= state_col < len(cells):
            cells[state_col].stylize(STATE_STYLES.get(row[state_col], ""))
        table.add_row(*cells)
    console.print(table)
