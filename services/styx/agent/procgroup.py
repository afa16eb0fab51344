"""Process groups: is one still alive, and stopping one (SIGTERM, then SIGKILL).

Tasks and local agents run in their own sessions, so their process group id is the
leader's pid and one signal reaches every process they started. Used by the agent's task
runner and by the local provider.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)


def group_alive(pgid: int) -> bool:
    """True while group ``pgid`` has a process that is not a zombie.

    Zombies are ignored: an orphan whose new parent (PID 1 of a container, say) never
    reaps it has finished all the same, and waiting for it would only delay a stop.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    live = _live_members(pgid)
    return True if live is None else live > 0


def group_members(pgid: int) -> Iterator[tuple[int, str]] | None:
    """(pid, state letter) of every process of group ``pgid`` per /proc; None without /proc."""
    if not os.path.isdir("/proc/self"):
        return None
    return _scan(str(pgid))


def _scan(pgid: str) -> Iterator[tuple[int, str]]:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == pgid:
            yield int(entry.name), fields[0]


def _live_members(pgid: int) -> int | None:
    """Non-zombie processes of group ``pgid`` per /proc; None where there is no /proc."""
    members = group_members(pgid)
    return None if members is None else sum(1 for _, state in members if state not in ("Z", "X"))


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(pgid: int, leader: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """SIGTERM every process of the group, then SIGKILL what is left after ``grace_s``.

    ``leader`` (when it is our child) is reaped along the way.
    """
    if not signal_group(pgid, signal.SIGTERM):
        if leader is not None:
            leader.poll()
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    log.info("process group %d outlived its %.0fs grace period; killing it", pgid, grace_s)
    signal_group(pgid, signal.SIGKILL)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(5)
