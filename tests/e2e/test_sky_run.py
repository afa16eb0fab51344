"""`sky` as a user types it: run, status, logs, cancel, stats against the local plane."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from helpers import SkyCli, lines, sky_command, sky_env, wait_until


def test_run_echo_hello(sky: SkyCli) -> None:
    proc = sky("run", "--name", "hello", "--", "echo", "hello")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello\n"
    assert "Traceback" not in proc.stderr


def test_status_shows_succeeded(sky: SkyCli) -> None:
    table = sky.ok("status").stdout
    row = next(ln for ln in table.splitlines() if " hello " in ln)
    assert "SUCCEEDED" in row
    tasks = json.loads(sky.ok("status", "--json").stdout)
    hello = next(t for t in tasks if t["name"] == "hello")
    assert hello["state"] == "SUCCEEDED" and hello["exit_code"] == 0 and hello["run"] == "echo hello"


def test_logs_of_finished_task(sky: SkyCli) -> None:
    tasks = json.loads(sky.ok("status", "--json").stdout)
    hello = next(t for t in tasks if t["name"] == "hello")
    assert sky.ok("logs", hello["task_id"]).stdout == "hello\n"


def test_exit_code_is_the_tasks(sky: SkyCli) -> None:
    proc = sky("run", "--", "sh", "-c", "echo out; exit 3")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "out\n"
    assert "failed" in proc.stderr and "3" in proc.stderr


def test_single_argument_is_a_script(sky: SkyCli) -> None:
    proc = sky.ok("run", "--", "echo a && echo 'b c'")
    assert proc.stdout == "a\nb c\n"


def test_bad_cpus_is_one_line_exit_2(sky: SkyCli) -> None:
    proc = sky("run", "--cpus", "abc", "--", "echo", "x")
    assert proc.returncode == 2
    assert len(lines(proc.stderr)) == 1 and "--cpus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_logs_of_unknown_task(sky: SkyCli) -> None:
    proc = sky("logs", "t-000000000000")
    assert proc.returncode == 1
    assert "not found" in proc.stderr and "Traceback" not in proc.stderr
    assert len(lines(proc.stderr)) <= 2


def test_infeasible_fails_fast_with_reason(sky: SkyCli) -> None:
    started = time.monotonic()
    proc = sky("run", "--cpus", "100000", "--", "echo", "never")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cpus" in proc.stderr and "never" not in proc.stdout
    assert time.monotonic() - started < 30


def test_detach_then_cancel(sky: SkyCli) -> None:
    proc = sky.ok("run", "--detach", "--", "sleep", "30")
    task_id = proc.stdout.strip()
    assert task_id.startswith("t-"), proc.stdout
    wait_until(lambda: sky.task(task_id)["state"] == "RUNNING", timeout=30, message=f"{task_id} RUNNING")
    cancel = sky.ok("cancel", task_id)
    assert task_id in cancel.stdout
    wait_until(lambda: sky.task(task_id)["state"] == "CANCELLED", timeout=30, message=f"{task_id} CANCELLED")
    # Cancelling again is a no-op that still succeeds.
    assert "CANCELLED" in sky.ok("cancel", task_id).stdout


def test_stats(sky: SkyCli) -> None:
    out = sky.ok("stats").stdout
    assert "SUCCEEDED" in out and "jobs (total)" in out
    data = json.loads(sky.ok("stats", "--json").stdout)
    assert data["tasks_by_state"]["SUCCEEDED"] >= 2 and data["jobs_total"] >= 4


def test_ctrl_c_detaches_and_the_task_keeps_running(sky: SkyCli) -> None:
    proc = subprocess.Popen(
        [*sky_command(), "run", "--", "sh", "-c", "echo started; sleep 30"],
        env=sky_env(sky.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "sky cancel" in err and "Traceback" not in err
    task_id = next(t["task_id"] for t in json.loads(sky.ok("status", "--json").stdout) if "started" in t["run"])
    assert sky.task(task_id)["state"] == "RUNNING"
    sky.ok("cancel", task_id)
    wait_until(lambda: sky.task(task_id)["state"] == "CANCELLED", timeout=30, message=f"{task_id} CANCELLED")


def test_local_status_then_down_leaves_nothing(sky: SkyCli) -> None:
    status = sky.ok("local", "status")
    assert status.stdout.count("SERVING") == 3
    sky.down_and_check()
    assert sky("local", "status").returncode == 3

