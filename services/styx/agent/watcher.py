"""The task watcher: one small process per agent that kills the agent's tasks when it dies.

The agent starts it once (``TaskWatcher``), in a session of its own so that signals for
the agent's process group do not reach it, and keeps the write end of its "registry"
pipe. Every task's bash inherits that write end too and, as its very first command,
registers its process group (``+<pgid> <task_id>``) and closes its copy; the agent writes
``-<pgid>`` once a group is over. The kernel closes the agent's end when the agent exits
for any reason (kill -9 included), so end-of-file on the pipe means: the agent is gone and
every task it started has registered. The watcher then SIGKILLs every registered group
still running that task, grandchildren included, and exits.

Why one watcher per agent and not a supervisor process per task (or PR_SET_PDEATHSIG):
a per-task Python supervisor costs ~10 ms of CPU per task, which caps a node at ~100
tasks/s; this costs nothing per task. PR_SET_PDEATHSIG reaches only the direct child,
fires when the forking *thread* exits, and is Linux-only. A group recycled by another
program is never signalled: a member must still carry the task's ``STYX_TASK_ID``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from styx.agent.reaper import group_runs_task

# The first line of every task script, given the inherited registry fd: register, close.
# It stays on the script's first line, so the script's own line numbers do not change.
_REGISTER = 'echo "+$$ $STYX_TASK_ID" >&{fd}; exec {fd}>&-; '


def register_prefix(fd: int) -> str:
    """What to put in front of a task's script so that it registers its group first."""
    return _REGISTER.format(fd=fd)


class TaskWatcher:
    """The agent's side: starts the watcher process, spawns tasks registered with it, and
    tells it about finished groups.

    Thread-safe. Should the watcher die, the next ``spawn`` starts a new one and hands it
    the groups still running (the next agent's reaper is the last line behind it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_fd = -1
        self._live: dict[int, str] = {}

    def spawn(self, script: str, task_id: str, **popen: Any) -> subprocess.Popen[bytes]:
        """``bash -c script`` leading a new session, registered with a live watcher."""
        with self._lock:  # the fd passed on must stay the live watcher's while we fork
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            fd = self._write_fd
            proc = subprocess.Popen(
                ["bash", "-c", register_prefix(fd) + script],
                start_new_session=True,  # own group: a cancel reaches every child
                close_fds=True,
                pass_fds=(fd,),
                **popen,
            )
            self._live[proc.pid] = task_id
            self._send(f"+{proc.pid} {task_id}\n")
        return proc

    def release(self, pgid: int) -> None:
        """The group is over: the watcher forgets it."""
        with self._lock:
            self._live.pop(pgid, None)
            self._send(f"-{pgid}\n")

    def close(self, wait_s: float = 2.0) -> None:
        """Let the watcher exit, waiting up to ``wait_s`` for it. It kills what is still
        registered, so call it once no task should run. One that is still waiting for a
        task to close its copy of the pipe is left to finish on its own."""
        with self._lock:
            if self._write_fd >= 0:
                os.close(self._write_fd)
                self._write_fd = -1
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(wait_s)

    def _start(self) -> None:
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        read_end, write_end = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "styx.agent.watcher", str(read_end)],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the agent's group may be killed as a whole: not us
                close_fds=True,
                pass_fds=(read_end,),
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._write_fd = write_end
        for pgid, task_id in self._live.items():
            self._send(f"+{pgid} {task_id}\n")

    def _send(self, line: str) -> None:
        # One line < PIPE_BUF: an atomic write. A dead watcher: the next spawn starts one.
        with contextlib.suppress(OSError):
            os.write(self._write_fd, line.encode())


def _parse(line: bytes, live: dict[int, str]) -> None:
    text = line.decode(errors="replace").strip()
    if not text or text[0] not in "+-":
        return
    pgid_text, _, task_id = text[1:].partition(" ")
    if not pgid_text.isdigit() or int(pgid_text) <= 1:
        return
    if text[0] == "+":
        live[int(pgid_text)] = task_id.strip()
    else:
        live.pop(int(pgid_text), None)


def watch(fd: int) -> list[int]:
    """Read registrations from ``fd`` until end-of-file, then kill what is still registered.

    :return: the process groups killed.
    """
    live: dict[int, str] = {}
    pending = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            _parse(line, live)
    _parse(pending, live)
    killed = []
    for pgid, task_id in live.items():
        if task_id and group_runs_task(pgid, task_id):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            killed.append(pgid)
    return killed


def main(argv: list[str]) -> None:
    """``python -m styx.agent.watcher <fd>``: watch until the agent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the agent
    killed = watch(int(argv[1]))
    if killed:
        sys.stderr.write(f"styx task watcher: the agent died; killed task process groups {killed}\n")


if __name__ == "__main__":
    main(sys.argv)
