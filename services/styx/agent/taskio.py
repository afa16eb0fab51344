"""What a task attempt runs in: its environment, its unpacked workdir, and its log shipper.

Split from ``runner`` (which runs the attempt's processes); plain Python, no grpc.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from styx import workdir
from styx.common.config import CREDENTIAL_ENV
from styx.common.errors import InvalidArgument
from styx.common.secretbox import KEY_ENV as SECRET_KEY_ENV

log = logging.getLogger(__name__)

LOG_CHUNK_BYTES = 64 * 1024
SHIP_INTERVAL_S = 0.2
# Environment variables the agent keeps to itself: the control plane's credentials, and
# where the plane keeps its files (its token file, state, other tasks' sandboxes).
PRIVATE_ENV = (*CREDENTIAL_ENV, "STYX_HOME", "STYX_TLS_KEY", "STYX_DB_URL", SECRET_KEY_ENV)

AppendLogs = Callable[[int, bytes], int]
"""``append(offset, data) -> next_offset``: store ``data`` at ``offset`` of the attempt's log."""


class GangAssignment(Protocol):
    """The fields of an assignment that shape its environment (``runner.Assignment``)."""

    @property
    def task_id(self) -> str: ...

    @property
    def envs(self) -> Mapping[str, str]: ...

    @property
    def gpu_indices(self) -> tuple[int, ...]: ...

    @property
    def rank(self) -> int: ...

    @property
    def num_nodes(self) -> int: ...

    @property
    def node_addresses(self) -> tuple[str, ...]: ...


class WorkdirError(Exception):
    """The job's workdir archive could not be fetched or unpacked; the message says why."""


def unpack_workdir(archive: bytes, dest: Path) -> None:
    """Unpack a gzip-compressed tar into ``dest`` with ``styx.workdir.unpack``: size-checked
    (a gzip bomb is refused before anything is written), refusing absolute paths, ``..``,
    links that leave ``dest`` and device files (tarfile's "data" filter).
    """
    try:
        workdir.unpack(archive, dest)
    except InvalidArgument as exc:
        raise WorkdirError(f"workdir archive could not be unpacked: {exc.message}") from exc


def task_env(
    assignment: GangAssignment, node_id: str, base: Mapping[str, str] | None = None, address: str = ""
) -> dict[str, str]:
    """The environment of a task's processes: the agent's own minus its credentials and
    the plane's locations (PRIVATE_ENV), plus
    the task's envs, CUDA_VISIBLE_DEVICES (exactly the reserved GPUs, "" for none),
    STYX_TASK_ID / STYX_NODE_ID, and the gang variables STYX_NODE_RANK, STYX_NUM_NODES and
    STYX_NODE_IPS (addresses one per line, rank order; this node's ``address`` alone for a
    one-node task), each also under its SKYPILOT_ name so SkyPilot task files run unchanged.
    """
    env = dict(os.environ if base is None else base)
    for name in PRIVATE_ENV:
        env.pop(name, None)
    env.update(assignment.envs)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in assignment.gpu_indices)
    env["STYX_TASK_ID"] = assignment.task_id
    env["STYX_NODE_ID"] = node_id
    addresses = assignment.node_addresses or ((address,) if address else ())
    for prefix in ("STYX", "SKYPILOT"):
        env[f"{prefix}_NODE_RANK"] = str(assignment.rank)
        env[f"{prefix}_NUM_NODES"] = str(max(1, assignment.num_nodes))
        env[f"{prefix}_NODE_IPS"] = "\n".join(addresses)
    return env


class LogShipper(threading.Thread):
    """Tails a log file and appends it remotely in chunks until told the writers are done."""

    def __init__(self, path: Path, append: AppendLogs, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._path = path
        self._append = append
        self._done = threading.Event()
        self.shipped = 0
        self.error: Exception | None = None

    def finish(self) -> None:
        """Say that no more output will be written; the thread exits once all is shipped."""
        self._done.set()

    def run(self) -> None:
        """Ship until finished and everything is sent (or the remote side refuses)."""
        offset = 0
        rewound = False
        try:
            with open(self._path, "rb") as fh:
                while True:
                    # Read "done" before reading the file: everything written before done was
                    # set is then seen by this read, so exiting on an empty read loses nothing.
                    finished = self._done.is_set()
                    fh.seek(offset)
                    data = fh.read(LOG_CHUNK_BYTES)
                    if not data:
                        if finished:
                            return
                        self._done.wait(SHIP_INTERVAL_S)
                        continue
                    try:
                        next_offset = self._append(offset, data)
                    except Exception:
                        if offset == 0 or rewound:
                            raise
                        # E.g. the server lost its copy and refuses the gap: start over from 0,
                        # which is always safe since bytes it already has are ignored.
                        rewound, offset = True, 0
                        continue
                    size = os.fstat(fh.fileno()).st_size
                    # The server says where the next append starts: trust it when it is
                    # within the file (it may be behind us after losing data), else go on.
                    offset = next_offset if 0 <= next_offset <= size else offset + len(data)
                    self.shipped = offset
        except Exception as exc:
            self.error = exc
            log.warning("log shipping of %s stopped: %s", self._path.name, exc)
