"""What this machine has: CPUs, memory and NVIDIA GPUs.

Used by the agent (to register the node's real capacity) and by the local provider (to
advertise the host offer). Imports nothing heavy so the CLI may use it too.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    """One GPU: its index as CUDA_VISIBLE_DEVICES counts it, product name, memory in GiB."""

    index: int
    name: str
    memory_gib: float


@dataclass(frozen=True)
class HostCapacity:
    """CPUs, memory in GiB and GPUs of this machine."""

    cpus: float
    memory_gib: float
    gpus: tuple[Gpu, ...]


def detect_cpus() -> float:
    """CPUs this process may run on (its affinity mask, so containers and taskset count)."""
    if hasattr(os, "sched_getaffinity"):
        return float(len(os.sched_getaffinity(0)))
    return float(os.cpu_count() or 1)


def detect_memory_gib() -> float:
    """Total memory in GiB, from /proc/meminfo's MemTotal (sysconf where there is no /proc)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024 * 1024)  # the value is in KiB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        return 0.0


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits``.

    Lines look like ``0, NVIDIA H100 80GB HBM3, 81559`` (memory in MiB). Malformed lines
    are skipped; "[N/A]" memory counts as 0.
    """
    gpus: list[Gpu] = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            continue
        # A product name could contain a comma, so index is the first field and memory the last.
        index_text, name, memory_text = parts[0], ",".join(parts[1:-1]).strip(), parts[-1]
        try:
            index = int(index_text)
        except ValueError:
            continue
        try:
            memory_gib = round(float(memory_text) / 1024, 2)
        except ValueError:
            memory_gib = 0.0
        gpus.append(Gpu(index=index, name=name, memory_gib=memory_gib))
    return sorted(gpus, key=lambda g: g.index)


def detect_gpus(timeout_s: float = 15.0) -> list[Gpu]:
    """NVIDIA GPUs as ``nvidia-smi`` reports them; empty when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run(
            [exe, *NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi could not run: %s", exc)
        return []
    if proc.returncode != 0:
        # Typical when the driver is missing or mismatched: treat the node as GPU-less.
        log.warning("nvidia-smi exited with %d: %s", proc.returncode, proc.stderr.strip()[:200])
        return []
    return parse_nvidia_smi(proc.stdout)


def detect_capacity() -> HostCapacity:
    """Detect CPUs, memory and GPUs of this machine."""
    return HostCapacity(cpus=detect_cpus(), memory_gib=round(detect_memory_gib(), 2), gpus=tuple(detect_gpus()))
