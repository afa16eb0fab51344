"""Task supervisor: run one task command and take its whole process group down with the agent.

Run by the agent as ``python -I -S supervise.py <fd> <label> -- <command...>`` in a new
session, so this process leads the task's process group. ``<fd>`` is the read end of a pipe
whose only write end the agent holds: the kernel closes it when the agent exits for any
reason (kill -9 included), so end-of-file on it means "the agent is gone" and this process
then SIGKILLs its group: the task's processes, grandchildren included, cannot outlive their
agent and run alongside the attempt the scheduler starts elsewhere.

A pipe rather than PR_SET_PDEATHSIG: the death signal fires when the *thread* that forked
exits, not the agent process, it needs ctypes (slow to import) and exists on Linux only,
while pipe EOF is exact and portable. ``<label>`` only names the attempt in ``ps``.

Stdlib only and no ``site`` (``-I -S``): this runs once per task and must start in a few ms.
The exit status is the command's (a signal death is re-raised on this process), so the
agent reports the same codes as when it ran the command itself.
"""

from __future__ import annotations

import os
import select
import signal
import sys


def _on_signal(signum: int, frame: object) -> None:
    """Wake the select loop (through the wakeup fd) and otherwise ignore the signal: a
    SIGTERM sent to the group reached the task too, whose own exit is what we wait for."""


def _exit_like(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default action is not to terminate
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    """Spawn the command, then wait for it to exit or for the agent to die, whichever first."""
    if len(argv) < 5 or argv[3] != "--":
        sys.stderr.write("usage: supervise.py <fd> <label> -- <command...>\n")
        os._exit(2)
    agent_fd = int(argv[1])
    command = argv[4:]
    os.set_inheritable(agent_fd, False)  # the task itself must not hold the pipe open
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    # Python-level handlers (not SIG_IGN) so the command starts with default dispositions.
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        pid = os.posix_spawnp(command[0], command, dict(os.environ))
    except OSError as exc:
        sys.stderr.write(f"cannot run {command[0]}: {exc}\n")
        os._exit(127)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            _exit_like(status)
        try:
            readable, _, _ = select.select([agent_fd, wake_r], [], [])
        except InterruptedError:
            continue
        if agent_fd in readable and not os.read(agent_fd, 1):
            os.killpg(0, signal.SIGKILL)  # the agent died: so does the task, all of it
        if wake_r in readable:
            os.read(wake_r, 512)


if __name__ == "__main__":
    main(sys.argv)
