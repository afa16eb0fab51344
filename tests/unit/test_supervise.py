"""The task supervisor (agent/supervise.py): exit statuses pass through unchanged, and
closing its lifeline (what the kernel does when the agent dies) kills the whole group."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from helpers import pid_alive, wait_until
from styx.agent.procgroup import group_alive, spawn_supervised


def _run(tmp_path: Path, script: str) -> tuple[int, bytes]:
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        proc, lifeline = spawn_supervised(["bash", "-c", script], "t-1-1", tmp_path, dict(os.environ), out)
        try:
            code = proc.wait(20)
        finally:
            os.close(lifeline)
    return code, log.read_bytes()


@pytest.mark.parametrize(("script", "code"), [("echo hi", 0), ("exit 3", 3), ("kill -TERM $$", -signal.SIGTERM)])
def test_exit_status_is_the_commands(tmp_path: Path, script: str, code: int) -> None:
    assert _run(tmp_path, script)[0] == code


def test_output_reaches_the_log_and_the_lifeline_is_not_inherited(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "echo out; echo err >&2; ls /proc/$$/fd | wc -l")
    assert code == 0
    lines = out.decode().split()
    assert lines[:2] == ["out", "err"]
    assert int(lines[2]) <= 4, "the task holds only stdin, stdout, stderr (and ls's own fd)"


def test_closing_the_lifeline_kills_the_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    with open(tmp_path / "out.log", "wb") as out:
        script = f"(sleep 600 & echo $! > {pids}; wait) & sleep 600"
        proc, lifeline = spawn_supervised(["bash", "-c", script], "t-1-1", tmp_path, dict(os.environ), out)
    wait_until(lambda: pids.exists() and pids.read_text().strip(), timeout=10, message="the grandchild")
    grandchild = int(pids.read_text())
    assert group_alive(proc.pid)
    os.close(lifeline)  # as if the agent died
    assert proc.wait(5) == -signal.SIGKILL
    wait_until(lambda: not group_alive(proc.pid) and not pid_alive(grandchild), timeout=5, message="the group gone")


def test_sigterm_to_the_group_reaches_the_task_not_the_supervisor(tmp_path: Path) -> None:
    """A cancel SIGTERMs the group: the task decides how it ends, the supervisor waits."""
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        script = "trap 'echo bye; exit 7' TERM; echo ready; while true; do sleep 0.05; done"
        proc, lifeline = spawn_supervised(["bash", "-c", script], "t-1-1", tmp_path, dict(os.environ), out)
    try:
        wait_until(lambda: b"ready" in log.read_bytes(), timeout=5, message="the trap to be set")
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(5) == 7
    finally:
        os.close(lifeline)
    assert b"bye" in log.read_bytes()
