"""Scheduler domain: task specs, task records, and job validation.

Validation applies defaults and raises InvalidArgument naming the field path
("tasks[2].resources.cpus: ...") so clients in any language get an actionable message.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from styx.common.errors import InvalidArgument
from styx.common.resources import (
    DEFAULT_TASK_CPUS,
    Accelerator,
    Resources,
    infra_parts,
    parse_arch,
    parse_image_id,
)

PENDING, SCHEDULED, RUNNING = "PENDING", "SCHEDULED", "RUNNING"
SUCCEEDED, FAILED, CANCELLED, SKIPPED = "SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, SKIPPED})
ACTIVE = frozenset({SCHEDULED, RUNNING})

MAX_TASKS_PER_JOB = 100_000
# A task re-queued this many times because its node was lost fails instead.
MAX_NODE_LOSSES = 3
# Whether a streaming call's client is still there (grpc's context.is_active).
IsActive = Callable[[], bool]
# Seconds after a LOST node's last heartbeat before its tasks re-queue: the broker's lease
# (default 15 s), after which its agent has killed them itself, plus a margin for that
# kill, the loops' periods and clock skew between hosts.
DEFAULT_NODE_FENCE_S = 20.0


@dataclass(frozen=True)
class AbsentNode:
    """A node the broker no longer counts as READY.

    ``gone``: deregistered (GONE), so its tasks are known stopped. Otherwise LOST (no
    heartbeat): its tasks may still run until its agent fences itself.
    """

    node_id: str
    gone: bool
    last_heartbeat: float


MAX_NODES_PER_TASK = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# An environment variable's name (envs, secrets): a shell identifier.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_RULE = "letters, digits and '_', not starting with a digit"
_PRIORITY_RANGE = (-1_000_000, 1_000_000)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and when a failed task runs again; backoff doubles up to max_backoff_s."""

    max_retries: int = 0
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    exit_codes: tuple[int, ...] = ()

    def allows(self, failures: int, exit_code: int | None) -> bool:
        """Whether a task that has failed ``failures`` times (this one included) runs again."""
        if failures > self.max_retries:
            return False
        return not self.exit_codes or exit_code in self.exit_codes

    def delay(self, failures: int) -> float:
        """Seconds to wait before the retry that follows failure number ``failures``."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** max(0, failures - 1)))


@dataclass(frozen=True)
class TaskSpec:
    """A validated task spec with defaults applied."""

    name: str
    run: str
    resources: Resources = field(default_factory=Resources)
    setup: str = ""
    envs: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 0.0
    # Nodes the task runs on at once (a gang); 1 for ordinary tasks.
    num_nodes: int = 1
    # Secret environment variables. Plain text in a client (the task file, --secret);
    # inside the scheduler, from submission on, each value is sealed (styx.common.secretbox)
    # and is opened only for the agent's assignment.
    secrets: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize for the store (by hand: dataclasses.asdict is ten times slower)."""
        extra: dict[str, Any] = {"num_nodes": self.num_nodes} if self.num_nodes > 1 else {}
        if self.secrets:
            extra["secrets"] = self.secrets
        return json.dumps(
            {
                **extra,
                "name": self.name,
                "run": self.run,
                "resources": _resources_dict(self.resources),
                "setup": self.setup,
                "envs": self.envs,
                "workdir": self.workdir,
                "priority": self.priority,
                "depends_on": list(self.depends_on),
                "retry": {
                    "max_retries": self.retry.max_retries,
                    "backoff_s": self.retry.backoff_s,
                    "max_backoff_s": self.retry.max_backoff_s,
                    "exit_codes": list(self.retry.exit_codes),
                },
                "timeout_s": self.timeout_s,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        """Inverse of to_json."""
        raw: dict[str, Any] = json.loads(text)
        res = raw.pop("resources")
        res["accelerators"] = tuple(Accelerator(**a) for a in res["accelerators"])
        raw["depends_on"] = tuple(raw["depends_on"])
        retry = raw.pop("retry", None) or {}
        retry["exit_codes"] = tuple(retry.get("exit_codes", ()))
        return cls(resources=Resources(**res), retry=RetryPolicy(**retry), **raw)


_RESOURCE_FIELDS = tuple(f.name for f in fields(Resources))


def _resources_dict(res: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(res, name) for name in _RESOURCE_FIELDS}
    out["accelerators"] = [{"name": a.name, "count": a.count} for a in res.accelerators]
    out["any_of"] = [_resources_dict(r) for r in res.any_of]
    out["ordered"] = [_resources_dict(r) for r in res.ordered]
    return out


@functools.lru_cache(maxsize=4096)
def resources_to_json(res: Resources) -> str:
    """Serialize a task's resources for the store's light ``resources_json`` column."""
    return json.dumps(_resources_dict(res))


@functools.lru_cache(maxsize=4096)
def resources_from_json(text: str) -> Resources:
    """Inverse of resources_to_json; cached, since most tasks of a queue share their resources."""
    return Resources(**json.loads(text))


@dataclass
class TaskRecord:
    """A task as stored, with its current state."""

    task_id: str
    job_id: str
    seq: int
    spec: TaskSpec
    state: str
    attempt: int = 0
    node_id: str = ""
    gpu_indices: tuple[int, ...] = ()
    exit_code: int | None = None
    failure_reason: str = ""
    created_at: float = 0.0
    scheduled_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None
    failures: int = 0
    job_name: str = ""
    # Multi-node tasks, once placed: one entry per rank (node_id / gpu_indices are rank 0's).
    ranks: list[RankRecord] = field(default_factory=list)
    # A gang attempt that failed (or lost a node) and is retried once every rank stopped:
    # {"why", "delay" (seconds or None), and the counters to store ("failures" / "node_losses")}.
    pending_retry: dict[str, Any] | None = None

    @property
    def allocation_id(self) -> str:
        """The broker allocation of the current attempt."""
        return f"{self.task_id}/{self.attempt}"

    def ranks_json(self) -> str:
        """The gang state for the store's ``ranks_json`` column ("" for one-node tasks)."""
        if not self.ranks:
            return ""
        return json.dumps(
            {
                "ranks": [
                    {
                        "node_id": r.node_id,
                        "gpu_indices": list(r.gpu_indices),
                        "address": r.address,
                        "state": r.state,
                        "exit_code": r.exit_code,
                        "ended": r.ended,
                        "cancel": r.cancel,
                    }
                    for r in self.ranks
                ],
                "pending_retry": self.pending_retry,
            }
        )

    def load_ranks(self, text: str) -> None:
        """Inverse of ranks_json."""
        if not text:
            return
        raw = json.loads(text)
        self.ranks = [
            RankRecord(
                node_id=r["node_id"],
                gpu_indices=tuple(r["gpu_indices"]),
                address=r["address"],
                state=r["state"],
                exit_code=r["exit_code"],
                ended=r["ended"],
                cancel=r["cancel"],
            )
            for r in raw["ranks"]
        ]
        self.pending_retry = raw.get("pending_retry")


@dataclass
class RankRecord:
    """One rank of a placed multi-node task."""

    node_id: str
    gpu_indices: tuple[int, ...]
    address: str = ""
    state: str = SCHEDULED
    exit_code: int | None = None
    # Its agent reported the rank over (process gone, output shipped).
    ended: bool = False
    # Why the rank is being stopped; non-empty once a Cancellation is owed to it.
    cancel: str = ""


@dataclass(frozen=True)
class Event:
    """One recorded change of a task."""

    seq: int
    time: float
    type: str
    job_id: str
    task_id: str
    state: str
    attempt: int
    node_id: str
    message: str


def validate_job(specs: list[TaskSpec], max_tasks: int = MAX_TASKS_PER_JOB) -> list[TaskSpec]:
    """Check a job's tasks, fill defaults (names, CPUs) and reject cycles.

    Returns the specs to store. Raises InvalidArgument naming the first bad field.
    """
    if not specs:
        raise InvalidArgument("job.tasks: at least one task is required")
    if len(specs) > max_tasks:
        raise InvalidArgument(f"job.tasks: at most {max_tasks} tasks per job, got {len(specs)}; split the job")
    out: list[TaskSpec] = []
    names: set[str] = set()
    for i, spec in enumerate(specs):
        path = f"job.tasks[{i}]"
        name = spec.name or f"task-{i}"
        if not _NAME.match(name):
            raise InvalidArgument(f"{path}.name: {name!r} must be 1-63 characters of letters, digits, '.', '_' or '-'")
        if name in names:
            raise InvalidArgument(f"{path}.name: {name!r} is used twice in the job; task names must be unique")
        names.add(name)
        if not spec.run.strip():
            raise InvalidArgument(f"{path}.run: must not be empty; give the command to run")
        for what, keys in (("envs", spec.envs), ("secrets", spec.secrets)):
            for key in keys:
                if not ENV_NAME.match(key):
                    raise InvalidArgument(
                        f"{path}.{what}: {key!r} is not a valid environment variable name ({ENV_NAME_RULE})"
                    )
        if not _PRIORITY_RANGE[0] <= spec.priority <= _PRIORITY_RANGE[1]:
            raise InvalidArgument(f"{path}.priority: must be within {_PRIORITY_RANGE}, got {spec.priority}")
        res = _validate_resources(spec.resources, f"{path}.resources")
        retry = _validate_retry(spec.retry, f"{path}.retry")
        if spec.timeout_s < 0:
            raise InvalidArgument(f"{path}.timeout_s: must not be negative, got {spec.timeout_s:g}")
        num_nodes = spec.num_nodes or 1
        if not 1 <= num_nodes <= MAX_NODES_PER_TASK:
            raise InvalidArgument(f"{path}.num_nodes: must be 1-{MAX_NODES_PER_TASK}, got {spec.num_nodes}")
        out.append(
            TaskSpec(
                name=name,
                run=spec.run,
                resources=res,
                setup=spec.setup,
                envs=dict(spec.envs),
                workdir=spec.workdir,
                priority=spec.priority,
                depends_on=tuple(spec.depends_on),
                retry=retry,
                timeout_s=spec.timeout_s,
                num_nodes=num_nodes,
                secrets=dict(spec.secrets),
            )
        )
    for i, spec in enumerate(out):
        for dep in spec.depends_on:
            if dep not in names:
                raise InvalidArgument(f"job.tasks[{i}].depends_on: no task named {dep!r} in this job")
            if dep == spec.name:
                raise InvalidArgument(f"job.tasks[{i}].depends_on: task {dep!r} cannot depend on itself")
    cycle = find_cycle({s.name: s.depends_on for s in out})
    if cycle:
        raise InvalidArgument("job.tasks: dependency cycle " + " -> ".join(cycle) + "; remove one edge")
    return out


def _validate_retry(retry: RetryPolicy, path: str) -> RetryPolicy:
    if not 0 <= retry.max_retries <= 100:
        raise InvalidArgument(f"{path}.max_retries: must be 0-100, got {retry.max_retries}")
    if retry.backoff_s < 0 or retry.max_backoff_s < 0:
        raise InvalidArgument(f"{path}.backoff_s: must not be negative")
    return RetryPolicy(
        max_retries=retry.max_retries,
        backoff_s=retry.backoff_s or 1.0,
        max_backoff_s=retry.max_backoff_s or 300.0,
        exit_codes=tuple(retry.exit_codes),
    )


def _validate_resources(res: Resources, path: str) -> Resources:
    normalized, error = _normalize_resources(res)
    if error:
        raise InvalidArgument(f"{path}.{error}")
    return normalized


@functools.lru_cache(maxsize=4096)
def _normalize_resources(res: Resources) -> tuple[Resources, str]:
    """(resources with defaults applied, "") or (res, error without its path); cached, since
    the tasks of a big job mostly share one resource request."""
    if res.cpus < 0:
        return res, f"cpus: must not be negative, got {res.cpus:g}"
    if res.memory_gib < 0:
        return res, f"memory_gib: must not be negative, got {res.memory_gib:g}"
    for j, acc in enumerate(res.accelerators):
        if not acc.name.strip():
            return res, f"accelerators[{j}].name: required, e.g. A100"
        if acc.count < 1:
            return res, f"accelerators[{j}].count: must be at least 1"
    try:
        infra_parts(res.infra)
        parse_arch(res.arch, "arch")
        parse_image_id(res.image_id, "image_id")
    except InvalidArgument as exc:
        return res, exc.message
    if res.cpus == 0:
        return replace(res, cpus=DEFAULT_TASK_CPUS), ""
    return res, ""


def find_cycle(edges: dict[str, tuple[str, ...]]) -> list[str]:
    """Return one dependency cycle as a path (first node repeated at the end), or []."""
    color: dict[str, int] = {}
    for root in edges:
        if color.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, idx = stack.pop()
            if idx == 0:
                color[node] = 1
                path.append(node)
            deps = edges.get(node, ())
            if idx < len(deps):
                stack.append((node, idx + 1))
                nxt = deps[idx]
                if color.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if not color.get(nxt):
                    stack.append((nxt, 0))
            else:
                color[node] = 2
                path.pop()
    return []
