"""Formatting of tasks, stats, errors and exit codes (no sockets)."""

from __future__ import annotations

import json
import time

import pytest

from styx.common.timeutil import to_timestamp
from styx.v1 import common_pb2, scheduler_pb2
from styx_cli import output
from styx_cli.errors import EXIT_FAILED, EXIT_UNREACHABLE, rpc_error_message


def make_task(**kw) -> common_pb2.Task:
    now = time.time()
    task = common_pb2.Task(
        task_id="t-1",
        job_id="j-1",
        state=common_pb2.TASK_STATE_SUCCEEDED,
        attempt=1,
        node_id="n-1",
        spec=common_pb2.TaskSpec(
            name="hello",
            run="echo   hello\nworld",
            resources=common_pb2.ResourceRequest(
                cpus=2, cpus_at_least=True, accelerators=[common_pb2.AcceleratorRequest(name="T4", count=1)]
            ),
        ),
    )
    task.created_at.CopyFrom(to_timestamp(now - 100))
    task.started_at.CopyFrom(to_timestamp(now - 90))
    task.finished_at.CopyFrom(to_timestamp(now - 60))
    for key, value in kw.items():
        if key == "spec":
            task.spec.CopyFrom(value)
        else:
            setattr(task, key, value)
    return task


def test_task_to_dict_is_plain_json() -> None:
    data = output.public(output.task_to_dict(make_task(exit_code=0, has_exit_code=True)))
    json.dumps(data)
    assert data["state"] == "SUCCEEDED" and data["exit_code"] == 0
    assert data["resources"]["accelerators"] == ["T4:1"]
    assert data["scheduled_at"] is None and data["created_at"].endswith("Z")


def test_exit_code_absent_is_null() -> None:
    assert output.task_to_dict(make_task())["exit_code"] is None


def test_task_row() -> None:
    task = output.task_to_dict(make_task(state=common_pb2.TASK_STATE_FAILED, failure_reason="no capacity"))
    row = output.task_row(task, now=task["_created"] + 100)
    assert row[:5] == ["t-1", "hello", "FAILED", "1", "-"]
    assert row[5] == "1m40s" and row[6] == "30s" and row[-1] == "no capacity"
    ok = output.task_row(output.task_to_dict(make_task()), now=time.time())
    assert ok[-1] == "echo hello world"  # whitespace collapsed to one line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-1, "-"),
        (0.42, "0.4s"),
        (12, "12s"),
        (185, "3m05s"),
        (7260, "2h01m"),
        (3 * 86400 + 4 * 3600, "3d04h"),
    ],
)
def test_format_duration(seconds, text) -> None:
    assert output.format_duration(seconds) == text


def test_one_line_truncates() -> None:
    assert output.one_line("x" * 100, 10) == "x" * 9 + "…"


def test_stats() -> None:
    stats = scheduler_pb2.Stats(tasks_by_state={"SUCCEEDED": 3, "FAILED": 1}, jobs_total=4, queue_wait_p50_s=0.25)
    data = output.stats_to_dict(stats)
    assert data["tasks_total"] == 4 and data["tasks_by_state"] == {"FAILED": 1, "SUCCEEDED": 3}
    rows = output.stats_rows(data)
    assert ["jobs (total)", "4"] in rows
    assert any(r[0].startswith("queue wait") and r[1].startswith("0.2s") for r in rows)


def test_print_tasks_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    task = output.task_to_dict(make_task(spec=common_pb2.TaskSpec(name="n", run="echo [red]x[/red]")))
    output.print_tasks([task], as_json=False)
    out = capsys.readouterr().out
    assert "t-1" in out and "SUCCEEDED" in out and "[red]x[/red]" in out  # user text is not markup
    output.print_tasks([task], as_json=True)
    assert json.loads(capsys.readouterr().out)[0]["task_id"] == "t-1"


def test_state_name() -> None:
    assert output.state_name(common_pb2.TASK_STATE_CANCELLED) == "CANCELLED"
    assert output.state_name("TASK_STATE_PENDING") == "PENDING"


def test_paint_only_on_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert output.paint("x", "red", Tty()) == "\033[31mx\033[0m"  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert output.paint("x", "red", Tty()) == "x"  # type: ignore[arg-type]


def test_rpc_error_mapping() -> None:
    err = rpc_error_message("UNAVAILABLE", "connect failed", "scheduler", "127.0.0.1:1")
    assert err.exit_code == EXIT_UNREACHABLE
    assert err.message == "cannot reach the scheduler at 127.0.0.1:1: is it running? (sky local up)"
    for code in ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"):
        err = rpc_error_message(code, "tasks[0].run: must not be empty", "scheduler", "x")
        assert (err.message, err.exit_code) == ("tasks[0].run: must not be empty", EXIT_FAILED)
    assert "token" in rpc_error_message("UNAUTHENTICATED", "", "scheduler", "x").message
    assert rpc_error_message("DEADLINE_EXCEEDED", "", "scheduler", "x").exit_code == EXIT_UNREACHABLE
    assert "INTERNAL" in rpc_error_message("INTERNAL", "ref err-1", "scheduler", "x").message


def test_exit_code_for_tasks() -> None:
    from styx_cli.commands import exit_code_for

    S = common_pb2
    assert exit_code_for(S.Task(state=S.TASK_STATE_SUCCEEDED)) == 0
    assert exit_code_for(S.Task(state=S.TASK_STATE_FAILED, exit_code=3, has_exit_code=True)) == 3
    assert exit_code_for(S.Task(state=S.TASK_STATE_FAILED, exit_code=-9, has_exit_code=True)) == 137
    assert exit_code_for(S.Task(state=S.TASK_STATE_FAILED, failure_reason="infeasible")) == 1
    assert exit_code_for(S.Task(state=S.TASK_STATE_CANCELLED)) == 1
