"""The agent's task watcher (agent/watcher.py): tasks run as plain ``bash -c`` with the
same exit statuses and line numbers, and when the agent's end of the registry closes (as
the kernel does when the agent dies) every registered task group is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import pid_alive, wait_until
from styx.agent.procgroup import group_alive
from styx.agent.watcher import TaskWatcher, watch


@pytest.fixture
def watcher():
    w = TaskWatcher()
    yield w
    w.close()


def _run(w: TaskWatcher, tmp_path: Path, script: str) -> tuple[int, str]:
    log = tmp_path / "out.log"
    env = dict(os.environ, STYX_TASK_ID="t-1")
    with open(log, "wb") as out:
        proc = w.spawn(script, "t-1", cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        code = proc.wait(20)
    w.release(proc.pid)
    return code, log.read_text()


@pytest.mark.parametrize(("script", "code"), [("echo hi", 0), ("exit 3", 3), ("kill -TERM $$", -signal.SIGTERM)])
def test_exit_status_is_the_scripts(watcher, tmp_path: Path, script: str, code: int) -> None:
    assert _run(watcher, tmp_path, script)[0] == code


def test_line_numbers_and_fds_are_the_scripts(watcher, tmp_path: Path) -> None:
    code, out = _run(watcher, tmp_path, "echo line=$LINENO\nls /proc/$$/fd | wc -l\nbogus-command-xyz")
    assert code == 127
    lines = out.split("\n")
    assert lines[0] == "line=1"
    assert int(lines[1]) <= 4, "the task holds only stdin, stdout, stderr (and ls's own fd)"
    assert "line 3: bogus-command-xyz" in out


AGENT = textwrap.dedent(
    """
    import os, subprocess, sys
    from styx.agent.watcher import TaskWatcher
    w = TaskWatcher()
    script = "sleep 600 & echo child=$!; (sleep 600 & echo grandchild=$!; wait) & sleep 600"
    env = dict(os.environ, STYX_TASK_ID="t-1")
    proc = w.spawn(script, "t-1", env=env, stdout=open(sys.argv[1], "wb"), stderr=subprocess.STDOUT)
    print(proc.pid, flush=True)
    sys.stdin.read()  # until killed
    """
)


def test_a_dead_agents_tasks_are_killed(tmp_path: Path) -> None:
    log = tmp_path / "task.log"
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(log)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        leader = int(agent.stdout.readline())
        wait_until(lambda: b"grandchild=" in log.read_bytes(), timeout=10, message="the task to start")
        pids = {k: int(v) for k, v in (ln.split("=") for ln in log.read_text().split())}
        agent.kill()
        agent.wait(5)
        wait_until(lambda: not group_alive(leader), timeout=5, message="the task group to die with its agent")
        assert not pid_alive(pids["child"]) and not pid_alive(pids["grandchild"])
    finally:
        agent.kill()
        agent.wait()
        if group_alive(leader):
            os.killpg(leader, signal.SIGKILL)


def test_watch_kills_only_registered_groups_running_their_task() -> None:
    env = {"PATH": os.environ["PATH"]}
    mine = subprocess.Popen(["sleep", "60"], start_new_session=True, env={**env, "STYX_TASK_ID": "t-a"})
    done = subprocess.Popen(["sleep", "60"], start_new_session=True, env={**env, "STYX_TASK_ID": "t-b"})
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)
    try:
        r, w = os.pipe()
        os.write(w, f"+{mine.pid} t-a\n+{done.pid} t-b\n-{done.pid}\n+{stranger.pid} t-c\ngarbage\n".encode())
        os.close(w)
        assert watch(r) == [mine.pid]
        assert mine.wait(5) == -signal.SIGKILL
        assert done.poll() is None and stranger.poll() is None
    finally:
        for p in (mine, done, stranger):
            p.kill()
            p.wait()
