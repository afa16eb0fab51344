"""Timing one command to the first line it prints (the launch benchmarks share this)."""

from __future__ import annotations

import subprocess
import tempfile
import time


def first_output(argv: list[str], env: dict[str, str], marker: str = "first", timeout_s: float = 300.0) -> float:
    """Seconds from spawning ``argv`` to ``marker`` on its stdout (it then runs to the end).

    stderr goes to a file, not a pipe nobody reads (a chatty command would block on it),
    and its tail is quoted when the command fails or never prints ``marker``."""
    with tempfile.TemporaryFile(mode="w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        seen = float("nan")
        for line in proc.stdout:
            if line.strip() == marker and seen != seen:
                seen = time.perf_counter() - start
        proc.wait(timeout_s)
        if proc.returncode != 0 or seen != seen:
            err.seek(0)
            tail = err.read()[-800:]
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode} without printing {marker!r}: {tail}")
    return seen
