"""Task YAML files, SkyPilot-compatible where the field exists, into Styx task specs.

One YAML document is one task; several documents separated by ``---`` are a pipeline in
which each task depends on the previous one unless it says ``depends_on:`` itself. A first
document holding only ``name`` names the job (as in SkyPilot's pipelines).

Every error names the file, the key's path and what is allowed, e.g.
``train.yaml: tasks[1].resources.cpus: 'four' is not a number; use N or N+``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from styx.common.errors import InvalidArgument
from styx.common.resources import (
    Accelerator,
    Resources,
    infra_parts,
    parse_accelerator,
    parse_amount,
    parse_arch,
    parse_image_id,
)
from styx.scheduler.model import ENV_NAME, ENV_NAME_RULE, MAX_NODES_PER_TASK, RetryPolicy, TaskSpec

TASK_KEYS = {
    "name": "task name",
    "resources": "what the task needs (cpus, memory, accelerators, infra ...)",
    "num_nodes": "nodes to run on at once, 1-64 (each gets the resources)",
    "envs": "environment variables (a key with no value must be given with --env or --env-file)",
    "secrets": "environment variables redacted in every output and encrypted at rest (--secret)",
    "workdir": "local directory shipped with the job",
    "setup": "commands run before `run`",
    "run": "commands to run",
    "priority": "higher runs first",
    "depends_on": "names of tasks in this file that must succeed first",
    "retry": "max_retries, or {max_retries, backoff, max_backoff, exit_codes}",
    "timeout": "seconds (or 30s, 10m, 2h) before the run is stopped",
}
RESOURCE_KEYS = {
    "cpus": "N or N+",
    "memory": "GiB, N or N+",
    "accelerators": "A100:8, {A100: 8} or a list of alternatives",
    "instance_type": "a provider's instance type",
    "arch": "x86_64 or arm64 (alias aarch64); default x86_64 for new instances",
    "image_id": "docker:IMAGE, the container image new (kubernetes) nodes run",
    "infra": "provider[/region[/zone]]",
    "cloud": "provider (older form of infra)",
    "region": "region (older form of infra)",
    "zone": "zone (older form of infra)",
    "use_spot": "true or false",
    "disk_size": "GB",
    "any_of": "list of alternative resource sets (cheapest wins)",
    "ordered": "list of alternative resource sets (first feasible wins)",
}
RETRY_KEYS = {"max_retries": "int", "backoff": "seconds", "max_backoff": "seconds", "exit_codes": "list of ints"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class ResourceChoice:
    """One alternative resource set of an ``any_of`` / ``ordered`` list."""

    resources: Resources
    instance_type: str = ""


@dataclass(frozen=True)
class TaskFileEntry:
    """A parsed task plus what its spec cannot hold yet (alternatives, workdir path)."""

    spec: TaskSpec
    workdir: str = ""
    instance_type: str = ""
    any_of: tuple[ResourceChoice, ...] = ()
    ordered: tuple[ResourceChoice, ...] = ()
    # Keys of envs / secrets written with no value ("HF_TOKEN:"), as (kind, key, where):
    # the command line must give them (apply_overrides checks).
    unset: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class JobFile:
    """A parsed task file: the job's name and its tasks in file order."""

    name: str
    tasks: tuple[TaskFileEntry, ...] = field(default_factory=tuple)

    @property
    def workdir(self) -> str:
        """The job's workdir: every task that names one must name the same directory."""
        dirs = {t.workdir for t in self.tasks if t.workdir}
        return dirs.pop() if len(dirs) == 1 else ""


class _Path:
    """Builds error messages that name the file and the key's path."""

    def __init__(self, source: str, parts: tuple[str, ...] = ()) -> None:
        self.source, self.parts = source, parts

    def __truediv__(self, part: str) -> _Path:
        return _Path(self.source, (*self.parts, part))

    def where(self) -> str:
        """``file: key.path`` (or just the file at the top)."""
        where = ".".join(self.parts).replace(".[", "[")
        return f"{self.source}: {where}" if where else self.source

    def error(self, message: str) -> InvalidArgument:
        return InvalidArgument(f"{self.where()}: {message}")


def load_file(path: str | Path) -> JobFile:
    """Read and parse a task YAML file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{p}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{p}: not a UTF-8 text file (byte {exc.start} is invalid); is it a task YAML?") from None
    return parse(text, source=str(p))


def parse(text: str, source: str = "<task>") -> JobFile:
    """Parse YAML text of one task or a pipeline."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidArgument(f"{source}: not valid YAML{where}: {problem}") from exc
    except RecursionError:
        raise InvalidArgument(f"{source}: not a task YAML: brackets or indentation nested too deeply") from None
    if not docs:
        raise InvalidArgument(f"{source}: the file holds no task; it needs at least `run:`")
    job_name = ""
    if len(docs) > 1 and isinstance(docs[0], dict) and set(docs[0]) == {"name"}:
        job_name = str(docs[0]["name"])
        docs = docs[1:]
    root = _Path(source)
    entries: list[TaskFileEntry] = []
    for i, doc in enumerate(docs):
        path = _Path(source, (f"tasks[{i}]",)) if len(docs) > 1 else root
        entries.append(_task(doc, path, i, previous=entries[-1].spec.name if entries else ""))
    return JobFile(name=job_name or entries[0].spec.name, tasks=tuple(entries))


def _task(doc: Any, path: _Path, index: int, previous: str) -> TaskFileEntry:
    if not isinstance(doc, dict):
        raise path.error(f"a task is a mapping of keys ({', '.join(TASK_KEYS)}), got {type(doc).__name__}")
    _known(doc, TASK_KEYS, path)
    name = _str(doc, "name", path) or f"task-{index}"
    run = _str(doc, "run", path)
    if not run.strip():
        raise (path / "run").error("required: the commands to run")
    num_nodes = _int(doc, "num_nodes", path, default=1)
    if not 1 <= num_nodes <= MAX_NODES_PER_TASK:
        raise (path / "num_nodes").error(f"must be 1-{MAX_NODES_PER_TASK}, got {num_nodes}")
    res_doc = doc.get("resources") or {}
    if not isinstance(res_doc, dict):
        raise (path / "resources").error(f"must be a mapping of {', '.join(RESOURCE_KEYS)}")
    resources, instance_type = _resources(res_doc, path / "resources", allow_alternatives=True)
    any_of = _choices(res_doc, "any_of", path / "resources")
    ordered = _choices(res_doc, "ordered", path / "resources")
    if any_of and ordered:
        raise (path / "resources").error("use either any_of or ordered, not both")
    if "depends_on" in doc:
        deps_raw = doc["depends_on"]
        deps = [deps_raw] if isinstance(deps_raw, str) else deps_raw
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise (path / "depends_on").error("must be a task name or a list of task names")
        depends_on = tuple(deps)
    else:
        depends_on = (previous,) if previous else ()
    envs, unset_envs = _envs(doc.get("envs"), path / "envs")
    secrets, unset_secrets = _envs(doc.get("secrets"), path / "secrets")
    spec = TaskSpec(
        name=name,
        run=run,
        resources=resources,
        setup=_str(doc, "setup", path),
        envs=envs,
        secrets=secrets,
        priority=_int(doc, "priority", path, default=0),
        depends_on=depends_on,
        retry=_retry(doc.get("retry"), path / "retry"),
        timeout_s=_duration(doc.get("timeout"), path / "timeout"),
        num_nodes=num_nodes,
    )
    unset = tuple(("envs", k, w) for k, w in unset_envs) + tuple(("secrets", k, w) for k, w in unset_secrets)
    return TaskFileEntry(spec, _str(doc, "workdir", path), instance_type, any_of, ordered, unset)


def _resources(doc: Mapping[str, Any], path: _Path, allow_alternatives: bool) -> tuple[Resources, str]:
    allowed = (
        RESOURCE_KEYS
        if allow_alternatives
        else {k: v for k, v in RESOURCE_KEYS.items() if k not in ("any_of", "ordered")}
    )
    _known(doc, allowed, path)
    cpus, cpus_plus = _amount(doc.get("cpus"), path / "cpus")
    memory, memory_plus = _amount(doc.get("memory"), path / "memory")
    infra = doc.get("infra")
    legacy = {k: doc[k] for k in ("cloud", "region", "zone") if doc.get(k) is not None}
    if infra is not None and legacy:
        raise path.error(f"give either infra or {'/'.join(legacy)}, not both")
    if legacy:
        if "cloud" not in legacy:
            raise (path / "cloud").error("required when region or zone is given, e.g. cloud: aws")
        infra = "/".join(str(legacy[k]) for k in ("cloud", "region", "zone") if k in legacy)
    infra = "" if infra is None else str(infra)
    try:
        infra_parts(infra)
    except InvalidArgument as exc:
        raise (path / "infra").error(exc.message.split(": ", 1)[1]) from exc
    use_spot = doc.get("use_spot", False)
    if not isinstance(use_spot, bool):
        raise (path / "use_spot").error(f"must be true or false, got {use_spot!r}")
    disk = doc.get("disk_size", 0) or 0
    if not isinstance(disk, int | float) or isinstance(disk, bool) or disk < 0:
        raise (path / "disk_size").error(f"must be a size in GB, got {disk!r}")
    instance_type = doc.get("instance_type") or ""
    if not isinstance(instance_type, str):
        raise (path / "instance_type").error(f"must be a string, got {instance_type!r}")
    arch = doc.get("arch") or ""
    if not isinstance(arch, str):
        raise (path / "arch").error(f"must be x86_64 or arm64, got {arch!r}")
    try:
        arch = parse_arch(arch, "arch")
    except InvalidArgument as exc:
        raise (path / "arch").error(exc.message.split(": ", 1)[1]) from exc
    image = doc.get("image_id") or ""
    try:
        image = parse_image_id(image if isinstance(image, str) else repr(image), "image_id")
    except InvalidArgument as exc:
        raise (path / "image_id").error(exc.message.split(": ", 1)[1]) from exc
    res = Resources(
        cpus=cpus,
        cpus_at_least=cpus_plus,
        memory_gib=memory,
        memory_at_least=memory_plus,
        accelerators=_accelerators(doc.get("accelerators"), path / "accelerators"),
        use_spot=use_spot,
        infra=infra,
        disk_gb=float(disk),
        arch=arch,
        image_id=image,
    )
    return res, instance_type


def _choices(doc: Mapping[str, Any], key: str, path: _Path) -> tuple[ResourceChoice, ...]:
    raw = doc.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw or not all(isinstance(r, dict) for r in raw):
        raise (path / key).error("must be a non-empty list of resource mappings")
    out = []
    for i, item in enumerate(raw):
        res, itype = _resources(item, path / key / f"[{i}]", allow_alternatives=False)
        out.append(ResourceChoice(res, itype))
    return tuple(out)


def _known(doc: Mapping[str, Any], allowed: Mapping[str, str], path: _Path) -> None:
    for key in doc:
        if key not in allowed:
            raise (path / str(key)).error(f"unknown key; allowed here: {', '.join(allowed)}")


def _str(doc: Mapping[str, Any], key: str, path: _Path) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise (path / key).error(f"must be a string, got {type(value).__name__} {value!r}")
    return value


def _int(doc: Mapping[str, Any], key: str, path: _Path, default: int) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise (path / key).error(f"must be an integer, got {value!r}")
    return value


def _amount(value: Any, path: _Path) -> tuple[float, bool]:
    if value is None:
        return 0.0, False
    if isinstance(value, bool):
        raise path.error(f"must be a number (N or N+), got {value!r}")
    try:
        return parse_amount(str(value), path.parts[-1])
    except InvalidArgument as exc:
        raise path.error(exc.message.split(": ", 1)[1]) from exc


def _accelerators(value: Any, path: _Path) -> tuple[Accelerator, ...]:
    if value is None:
        return ()
    items: list[tuple[str, Any]]
    if isinstance(value, str):
        items = [(value, None)]
    elif isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | set):
        items = [(str(v), None) for v in value]
    else:
        raise path.error(f"must be NAME:COUNT, {{NAME: COUNT}} or a list of them, got {value!r}")
    out = []
    for text, count in items:
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise path.error(f"count of {text} must be a positive integer, got {count!r}")
            text = f"{text}:{count}"
        try:
            out.append(parse_accelerator(text, path.parts[-1]))
        except InvalidArgument as exc:
            raise path.error(exc.message.split(": ", 1)[1]) from exc
    return tuple(out)


def _envs(value: Any, path: _Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``envs`` / ``secrets``: the values, and the keys written without one (with where)."""
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        raise path.error("must be a mapping of NAME: value")
    out = {}
    unset = []
    for key, val in value.items():
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise (path / str(key)).error(f"not a valid environment variable name ({ENV_NAME_RULE})")
        if isinstance(val, dict | list):
            raise (path / key).error("must be a string or number")
        if val is None:
            # SkyPilot's "must be given with --env": a placeholder, never an empty value.
            unset.append((key, (path / key).where()))
            continue
        text = str(val).lower() if isinstance(val, bool) else str(val)
        if "\x00" in text:
            raise (path / key).error("must not contain NUL characters (a process environment cannot hold them)")
        out[key] = text
    return out, unset


def _retry(value: Any, path: _Path) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    if isinstance(value, int) and not isinstance(value, bool):
        return RetryPolicy(max_retries=value)
    if not isinstance(value, dict):
        raise path.error("must be a number of retries or a mapping of " + ", ".join(RETRY_KEYS))
    _known(value, RETRY_KEYS, path)
    codes = value.get("exit_codes", [])
    if not isinstance(codes, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
        raise (path / "exit_codes").error("must be a list of integers")
    return RetryPolicy(
        max_retries=_int(value, "max_retries", path, default=0),
        backoff_s=_duration(value.get("backoff"), path / "backoff") or 1.0,
        max_backoff_s=_duration(value.get("max_backoff"), path / "max_backoff") or 300.0,
        exit_codes=tuple(codes),
    )


def _duration(value: Any, path: _Path) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise path.error(f"{value!r} is not a duration; use seconds or 30s, 10m, 2h")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise path.error(f"must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        raise path.error("must not be negative")
    return seconds


def apply_overrides(
    job: JobFile,
    *,
    name: str = "",
    cpus: str | None = None,
    memory: str | None = None,
    gpus: str | None = None,
    use_spot: bool | None = None,
    infra: str | None = None,
    envs: Mapping[str, str] | None = None,
    arch: str | None = None,
    image_id: str | None = None,
    secrets: Mapping[str, str] | None = None,
) -> JobFile:
    """Apply command-line overrides (``--cpus``, ``--gpus``, ``--env``, ``--secret`` ...) to
    every task. InvalidArgument names a key the file left without a value that the
    overrides do not give either."""
    edits: list[Callable[[Resources], Resources]] = []
    if cpus is not None:
        value, plus = parse_amount(cpus, "--cpus")
        edits.append(lambda r: replace(r, cpus=value, cpus_at_least=plus))
    if memory is not None:
        mem, mem_plus = parse_amount(memory, "--memory")
        edits.append(lambda r: replace(r, memory_gib=mem, memory_at_least=mem_plus))
    if gpus is not None:
        accel = parse_accelerator(gpus, "--gpus")
        edits.append(lambda r: replace(r, accelerators=(accel,)))
    if use_spot is not None:
        edits.append(lambda r: replace(r, use_spot=use_spot))
    if infra is not None:
        infra_parts(infra)
        edits.append(lambda r: replace(r, infra=infra))
    if arch is not None:
        wanted = parse_arch(arch, "--arch")
        edits.append(lambda r: replace(r, arch=wanted))
    if image_id is not None:
        image = parse_image_id(image_id, "--image-id")
        edits.append(lambda r: replace(r, image_id=image))
    tasks = []
    for entry in job.tasks:
        res = entry.spec.resources
        for edit in edits:
            res = edit(res)
        given = {"envs": {**entry.spec.envs, **(envs or {})}, "secrets": {**entry.spec.secrets, **(secrets or {})}}
        for kind, key, where in entry.unset:
            if key not in given[kind]:
                flag = "--env" if kind == "envs" else "--secret"
                also = " or --env-file FILE" if kind == "envs" else ""
                what = "environment variable" if kind == "envs" else "secret"
                raise InvalidArgument(
                    f"{where}: {what} {key} has no value; give it with {flag} {key}=VALUE ({flag} {key} "
                    f"copies it from this shell){also}, or write {key}: '' in the file for an empty value"
                )
        spec = replace(entry.spec, resources=res, envs=given["envs"], secrets=given["secrets"])
        tasks.append(replace(entry, spec=spec, unset=()))
    if len(tasks) == 1 and name:
        tasks[0] = replace(tasks[0], spec=replace(tasks[0].spec, name=name))
    return JobFile(name=name or job.name, tasks=tuple(tasks))
