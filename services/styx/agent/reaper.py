"""Reap what a dead agent left behind: the process groups of its unfinished task attempts.

Each attempt's state file (``<work_dir>/state/<name>.json``) records the process group of
its task and, once known, its outcome. The agent's task watcher (``watcher.py``) already
kills the groups when the agent dies; this is the second line, for a watcher that was
killed with its agent (an OOM kill, say). The next agent of the node calls it at start,
and the local provider when it finds an agent dead, before the node's tasks are re-queued
elsewhere.

A recorded group is killed only when one of its processes still carries the attempt's
``STYX_TASK_ID`` in its environment, so a process group id recycled by an unrelated
program is never signalled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

from styx.agent.procgroup import group_alive, group_members

log = logging.getLogger(__name__)

STATE_DIR = "state"


def reap_leftovers(work_dir: Path) -> list[int]:
    """SIGKILL the live process groups of ``work_dir``'s attempts that have no outcome.

    :return: the process group ids that were killed.
    """
    state_dir = work_dir / STATE_DIR
    if not state_dir.is_dir():
        return []
    killed = []
    for path in sorted(state_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "final" in data:
            continue
        pgid, task_id = data.get("pgid"), data.get("task_id")
        if not isinstance(pgid, int) or pgid <= 1 or not isinstance(task_id, str) or not task_id:
            continue
        if group_alive(pgid) and group_runs_task(pgid, task_id):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            log.warning("killed a dead agent's leftover task processes", extra={"task_id": task_id, "pgid": pgid})
            killed.append(pgid)
    return killed


def group_runs_task(pgid: int, task_id: str) -> bool:
    """True when a process of group ``pgid`` has ``STYX_TASK_ID=<task_id>`` in its environment
    (without /proc, e.g. macOS, the record is trusted)."""
    members = group_members(pgid)
    if members is None:
        return True
    marker = f"STYX_TASK_ID={task_id}".encode()
    for pid, _ in members:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    return True
        except OSError:
            continue
    return False
