"""Offers from a live cluster: what each node has free, cut into pod shapes.

A Kubernetes offer is a *shape* (a pod size) in a context, not a machine: its instance
type names the pod's size, e.g. ``gpu01xA100-cpu008-mem0064g`` (1 A100, 8 CPUs, 64 GiB)
or ``cpu004-mem0016g``; ``parse_shape`` reads it back, so ``create`` needs nothing but the
offer. Numbers are zero-padded so that, at equal price, the broker's tie-break (instance
type order) takes the smallest shape that fits and CPU-only shapes before GPU ones.

Free capacity per node = allocatable minus the requests of the pods bound to it that have
not finished. A shape is offered when some node could hold it at all; its ``max_instances``
= how many pods of the shape fit now plus the live Styx pods of that shape (the broker
counts live nodes of an offer within its cap), at least 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from styx.common.resources import gpu_model
from styx.provider import Offer

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
#: Node labels naming the GPU model, in the order tried (a configured label goes first).
GPU_LABELS = ("nvidia.com/gpu.product", "cloud.google.com/gke-accelerator", "amd.com/gpu.product")
_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "m": 1e-3,
}
_SHAPE = re.compile(r"^(?:gpu(?P<n>\d+)x(?P<gpu>[A-Za-z0-9.]+)-)?cpu(?P<cpu>\d+)-mem(?P<mem>\d+)g$")
GIB = 2**30


def quantity(text: object) -> float:
    """A Kubernetes quantity ("500m", "64Gi", "1e3", "8") as a float (cores or bytes)."""
    raw = str(text).strip()
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if raw.endswith(suffix):
            return float(raw[: -len(suffix)]) * _UNITS[suffix]
    return float(raw) if raw else 0.0


@dataclass(frozen=True)
class Shape:
    """A pod size: CPUs, GiB of memory, and optionally GPUs of one model."""

    cpus: int
    memory_gib: int
    gpus: int = 0
    gpu: str = ""

    @property
    def instance_type(self) -> str:
        """The offer's instance type (see the module docstring)."""
        base = f"cpu{self.cpus:03d}-mem{self.memory_gib:04d}g"
        return f"gpu{self.gpus:02d}x{self.gpu}-{base}" if self.gpus else base


def parse_shape(instance_type: str) -> Shape | None:
    """The shape an instance type names, None when it is not one."""
    m = _SHAPE.match(instance_type)
    if m is None:
        return None
    gpus = int(m["n"] or 0)
    return Shape(int(m["cpu"]), int(m["mem"]), gpus, m["gpu"] or "")


@dataclass
class NodeFree:
    """What one node has, and has free now."""

    name: str
    labels: dict[str, str]
    cpus: float
    memory_gib: float
    gpus: int
    gpu_resource: str
    gpu: str  # short model name ("" without GPUs)
    gpu_label: tuple[str, str]  # (label key, raw value) that named the model
    free_cpus: float = 0.0
    free_memory_gib: float = 0.0
    free_gpus: int = 0
    taints: list[dict[str, Any]] = field(default_factory=list)

    def fits(self, shape: Shape, empty: bool = False) -> int:
        """How many pods of ``shape`` fit in what is free now (``empty``: on the empty node).

        A CPU-only pod does not tolerate GPU taints, so a GPU-tainted node holds none. Other
        taints are left to the scheduler: a pod it refuses fails fast (see provider.py)."""
        for taint in self.taints:
            gpu_taint = taint.get("key") in GPU_RESOURCES
            if taint.get("effect") in ("NoSchedule", "NoExecute") and gpu_taint and not shape.gpus:
                return 0
        cpus, memory, gpus = (
            (self.cpus, self.memory_gib, self.gpus) if empty else (self.free_cpus, self.free_memory_gib, self.free_gpus)
        )
        if shape.gpus and (shape.gpu != self.gpu or gpus < shape.gpus):
            return 0
        counts = [int(cpus // shape.cpus), int(memory // shape.memory_gib)]
        if shape.gpus:
            counts.append(gpus // shape.gpus)
        return max(0, min(counts))


def _label_of(labels: Mapping[str, str], extra_label: str) -> tuple[str, str]:
    for key in (extra_label, *GPU_LABELS):
        if key and labels.get(key):
            return key, labels[key]
    return "", ""


def free_nodes(
    nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]], extra_label: str = ""
) -> list[NodeFree]:
    """Ready, schedulable nodes with their free capacity (``nodes`` / ``pods`` as wire dicts)."""
    used: dict[str, dict[str, float]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            res = container.get("resources") or {}
            for key, value in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
                used.setdefault(node, {})[key] = used.setdefault(node, {}).get(key, 0.0) + quantity(value)
    out = []
    for node in nodes:
        meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if spec.get("unschedulable") or not ready:
            continue
        alloc = status.get("allocatable") or {}
        labels = dict(meta.get("labels") or {})
        resource = next((r for r in GPU_RESOURCES if quantity(alloc.get(r, 0)) > 0), "")
        gpus = int(quantity(alloc.get(resource, 0))) if resource else 0
        key, raw = _label_of(labels, extra_label) if gpus else ("", "")
        name = meta.get("name", "")
        taken = used.get(name, {})
        free = NodeFree(
            name,
            labels,
            quantity(alloc.get("cpu", 0)),
            quantity(alloc.get("memory", 0)) / GIB,
            gpus,
            resource,
            gpu_model(raw) if gpus else "",
            (key, raw),
            taints=list(spec.get("taints") or []),
        )
        free.free_cpus = free.cpus - taken.get("cpu", 0.0)
        free.free_memory_gib = free.memory_gib - taken.get("memory", 0.0) / GIB
        free.free_gpus = gpus - int(taken.get(resource, 0.0)) if resource else 0
        out.append(free)
    return out


def _powers(limit: float) -> list[int]:
    out, n = [], 1
    while n <= limit:
        out.append(n)
        n *= 2
    return out


def shapes(nodes: Sequence[NodeFree]) -> list[Shape]:
    """The shapes offered for these nodes: GPU counts 1, 2, 4 ... per model with each
    node's CPU / memory per GPU, and CPU-only sizes 1, 2, 4 ... with 2 or 4 GiB per CPU."""
    out: set[Shape] = set()
    for model in sorted({n.gpu for n in nodes if n.gpu}):
        of_model = [n for n in nodes if n.gpu == model]
        cpu_per_gpu = min(n.cpus / n.gpus for n in of_model)
        mem_per_gpu = min(n.memory_gib / n.gpus for n in of_model)
        for count in _powers(max(n.gpus for n in of_model)):
            out.add(
                Shape(max(1, math.floor(cpu_per_gpu * count)), max(1, math.floor(mem_per_gpu * count)), count, model)
            )
    most_cpus = max((n.cpus for n in nodes), default=0)
    most_mem = max((n.memory_gib for n in nodes), default=0)
    for cpus in _powers(most_cpus):
        for per_cpu in (2, 4):
            if cpus * per_cpu <= most_mem:
                out.add(Shape(cpus, cpus * per_cpu))
    return sorted(out, key=lambda s: s.instance_type)


def offers(
    provider: str,
    context: str,
    nodes: Sequence[NodeFree],
    live: Mapping[str, int],
    gpu_price: float = 0.0,
    cpu_price: float = 0.0,
) -> list[Offer]:
    """Offers of one context; ``live``: instance type -> live Styx pods of that shape."""
    out = []
    for shape in shapes(nodes):
        if not any(n.fits(shape, empty=True) for n in nodes):
            continue  # no node could ever hold it
        # A shape that does not fit now is still offered once (0 would mean "no limit"): the
        # cluster may free up, and if not the create fails fast and the broker moves on.
        total = max(1, sum(n.fits(shape) for n in nodes) + live.get(shape.instance_type, 0))
        accel: dict[str, Any] = {}
        if shape.gpus:
            accel = {"accelerator_name": shape.gpu, "accelerator_count": shape.gpus}
        price = gpu_price * shape.gpus + cpu_price * shape.cpus
        out.append(
            Offer(
                provider,
                context,
                "",
                shape.instance_type,
                float(shape.cpus),
                float(shape.memory_gib),
                price_per_hour=price,
                max_instances=total,
                **accel,
            )
        )
    return out
