"""What the SSH provider keeps per node: one JSON file under ``$STYX_HOME/ssh/instances``.

A record is written before anything is made on a host, so a provisioner that dies during
a create leaves a record for the reconciler (``list_instances``) to terminate. Files are
private (0600 in a 0700 folder) and hold no secret: the node token only ever goes to
the host.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class Records:
    """Node id -> record dict, one file each. Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "instances"
        self._lock = threading.Lock()

    def _path(self, node_id: str) -> Path:
        return self.dir / f"{node_id}.json"

    def read(self, node_id: str) -> dict[str, Any] | None:
        """The node's record, None when there is none (or it is unreadable)."""
        try:
            data = json.loads(self._path(node_id).read_text())
        except (OSError, ValueError):
            return None
        return data if _valid(data) else None

    def all(self) -> list[dict[str, Any]]:
        """Every valid record, by node id."""
        if not self.dir.is_dir():
            return []
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _valid(data):
                out.append(data)
        return out

    def write(self, node_id: str, record: dict[str, Any]) -> None:
        """Replace the node's record atomically."""
        with self._lock:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self._path(node_id).with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            tmp.replace(self._path(node_id))

    def delete(self, node_id: str) -> None:
        """Forget the node (absent is fine)."""
        with self._lock:
            self._path(node_id).unlink(missing_ok=True)


def _valid(data: object) -> bool:
    return isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("node_id", "instance_id", "base"))
