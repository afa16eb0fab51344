"""What ``sky launch`` submits: a job built from a task YAML or an inline command.

Pure Python (no grpc, no sockets): reading the file, applying command-line overrides,
validating the DAG with the scheduler's own rules (so a cycle or a bad name is refused
before anything is sent), packing the workdir, and the plan ``--dryrun`` prints. The
task YAML parser imports PyYAML lazily, and this module is itself imported only by
``sky launch``, so ``sky --help`` stays light.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from styx_cli.errors import EXIT_USAGE, CliError

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LaunchJob:
    """A job ready to submit: name, task entries (taskfile.TaskFileEntry), workdir to pack."""

    name: str
    tasks: tuple[Any, ...]
    # Local directory to pack and ship with the job (absolute); None: no workdir.
    workdir: Path | None
    # Where the tasks came from, for messages: the YAML path or "command line".
    source: str


def is_task_file(entrypoint: Sequence[str]) -> bool:
    """True when ``sky launch`` got one argument naming a YAML file (else it is a command)."""
    return len(entrypoint) == 1 and entrypoint[0].lower().endswith(YAML_SUFFIXES)


def build_job(args: argparse.Namespace) -> LaunchJob:
    """The job ``sky launch`` will submit, with overrides applied and the DAG validated.

    Every problem the user can fix in the file or on the command line raises CliError
    with exit code 2 and a one-line message naming the file and key.
    """
    from styx.common.errors import InvalidArgument
    from styx.common.resources import parse_accelerator
    from styx.scheduler.model import RetryPolicy
    from styx.taskfile import JobFile, TaskFileEntry, apply_overrides, load_file
    from styx_cli.spec import command_to_script, parse_envs

    entry = list(args.entrypoint or ())
    workdir: Path | None = None
    try:
        if is_task_file(entry):
            path = Path(entry[0])
            if not path.is_file():
                raise CliError(f"{path}: no such task file", EXIT_USAGE)
            job = load_file(path)
            source = str(path)
            dirs = sorted({t.workdir for t in job.tasks if t.workdir})
            if len(dirs) > 1:
                raise CliError(
                    f"{source}: tasks name different workdirs ({', '.join(dirs)}); a job ships one workdir",
                    EXIT_USAGE,
                )
            if dirs:
                # A workdir in a YAML file is relative to the file, as in SkyPilot.
                workdir = (path.resolve().parent / Path(dirs[0]).expanduser()).resolve()
        else:
            if len(entry) == 1 and Path(entry[0]).is_dir():
                raise CliError(
                    f"sky launch: {entry[0]} is a directory, not a task YAML; give DIR/task.yaml, "
                    f"or ship it with --workdir {entry[0]} -- CMD",
                    EXIT_USAGE,
                )
            if not entry:
                raise CliError(
                    "sky launch: give a task YAML file or a command, e.g. sky launch task.yaml "
                    "or sky launch -- echo hello",
                    EXIT_USAGE,
                )
            from styx.scheduler.model import TaskSpec

            source = "command line"
            spec = TaskSpec(name=args.name or "", run=command_to_script(entry))
            job = JobFile(name=args.name or "", tasks=(TaskFileEntry(spec),))
        if args.workdir:
            workdir = Path(args.workdir).expanduser().resolve()
        job = apply_overrides(
            job,
            name=args.name or "",
            cpus=args.cpus,
            memory=args.memory,
            use_spot=args.use_spot,
            infra=args.infra,
            arch=getattr(args, "arch", None),
            image_id=getattr(args, "image_id", None),
            envs=parse_envs(args.env, env_files=args.env_file),
            secrets=parse_envs(args.secret, "--secret"),
        )
        tasks = list(job.tasks)
        if args.gpus is not None:
            # apply_overrides takes one accelerator; --gpus also accepts alternatives, as sky run does.
            accels = tuple(parse_accelerator(alt, "--gpus") for alt in args.gpus.split(","))
            tasks = [
                replace(t, spec=replace(t.spec, resources=replace(t.spec.resources, accelerators=accels)))
                for t in tasks
            ]
    except InvalidArgument as exc:
        raise CliError(exc.message, EXIT_USAGE) from None
    if args.priority is not None:
        tasks = [replace(t, spec=replace(t.spec, priority=args.priority)) for t in tasks]
    num_nodes = getattr(args, "num_nodes", None)
    if num_nodes is not None:
        from styx.scheduler.model import MAX_NODES_PER_TASK

        if not 1 <= num_nodes <= MAX_NODES_PER_TASK:
            raise CliError(f"--num-nodes: must be 1-{MAX_NODES_PER_TASK}, got {num_nodes}", EXIT_USAGE)
        tasks = [replace(t, spec=replace(t.spec, num_nodes=num_nodes)) for t in tasks]
    if args.retries is not None:
        if args.retries < 0:
            raise CliError(f"--retries: must be 0 or more, got {args.retries}", EXIT_USAGE)
        tasks = [
            replace(t, spec=replace(t.spec, retry=replace(t.spec.retry or RetryPolicy(), max_retries=args.retries)))
            for t in tasks
        ]
    validate(tasks, source)
    return LaunchJob(name=job.name, tasks=tuple(tasks), workdir=workdir, source=source)


def validate(tasks: Sequence[Any], source: str) -> list[Any]:
    """Run the scheduler's job validation here, so cycles and bad names fail at once.

    Returns the validated specs (defaults applied). Raises CliError (exit 2) with the
    scheduler's message prefixed by the file, e.g.
    ``dag.yaml: job.tasks: dependency cycle a -> c -> b -> a; remove one edge``.
    """
    from styx.common.errors import InvalidArgument
    from styx.scheduler.model import validate_job

    try:
        return validate_job([t.spec for t in tasks])
    except InvalidArgument as exc:
        raise CliError(f"{source}: {exc.message}", EXIT_USAGE) from None


def pack_workdir(directory: Path, max_bytes: int | None = None) -> bytes:
    """The workdir as a gzip'd tar (honouring .gitignore/.styxignore); CliError exit 2 on error."""
    from styx import workdir as wd
    from styx.common.errors import InvalidArgument

    try:
        return wd.pack(directory, max_bytes=wd.MAX_ARCHIVE_BYTES if max_bytes is None else max_bytes)
    except InvalidArgument as exc:
        raise CliError(exc.message, EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"workdir: cannot read {directory}: {exc.strerror or exc}", EXIT_USAGE) from None


def task_to_pb(entry: Any) -> Any:
    """A taskfile entry as a styx.v1.TaskSpec, with instance_type / any_of / ordered when the
    contract has those fields (the broker's catalog work adds them)."""
    from styx.common.resources import resources_to_pb
    from styx.scheduler.convert import spec_to_pb

    msg = spec_to_pb(entry.spec, reveal_secrets=True)
    fields = msg.resources.DESCRIPTOR.fields_by_name
    if entry.instance_type and "instance_type" in fields:
        msg.resources.instance_type = entry.instance_type
    for key in ("any_of", "ordered"):
        choices = getattr(entry, key, ())
        if choices and key in fields:
            for choice in choices:
                alt = resources_to_pb(choice.resources)
                if choice.instance_type and "instance_type" in fields:
                    alt.instance_type = choice.instance_type
                getattr(msg.resources, key).append(alt)
    return msg


def dependency_order(specs: Sequence[Any]) -> list[Any]:
    """Specs in an order where every task comes after its dependencies.

    Among tasks that are ready at the same point, higher priority first, then file order
    (the scheduler's own tie-break), so the plan reads like the likely start order.
    Assumes no cycle (``validate`` ran first).
    """
    import heapq

    index = {s.name: i for i, s in enumerate(specs)}
    waiting = {s.name: len(set(s.depends_on)) for s in specs}
    dependents: dict[str, list[str]] = {s.name: [] for s in specs}
    for s in specs:
        for dep in set(s.depends_on):
            dependents[dep].append(s.name)
    ready = [(-s.priority, index[s.name]) for s in specs if waiting[s.name] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, i = heapq.heappop(ready)
        spec = specs[i]
        out.append(spec)
        for child in dependents[spec.name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (-specs[index[child]].priority, index[child]))
    return out


def _amount(value: float, at_least: bool) -> str:
    return f"{value:g}{'+' if at_least else ''}"


def resources_text(res: Any, instance_type: str = "") -> str:
    """One-line summary of a Resources dataclass: ``cpus=2+ mem=16GiB gpus=A100:8 spot``."""
    parts = [f"cpus={_amount(res.cpus, res.cpus_at_least)}"]
    if res.memory_gib:
        parts.append(f"mem={_amount(res.memory_gib, res.memory_at_least)}GiB")
    if res.accelerators:
        parts.append("gpus=" + "|".join(f"{a.name}:{a.count}" for a in res.accelerators))
    itype = instance_type or getattr(res, "instance_type", "")
    if itype:
        parts.append(f"type={itype}")
    if res.infra:
        parts.append(f"infra={res.infra}")
    if getattr(res, "arch", ""):
        parts.append(f"arch={res.arch}")
    if getattr(res, "image_id", ""):
        parts.append(f"image={res.image_id}")
    if res.use_spot:
        parts.append("spot")
    if res.disk_gb:
        parts.append(f"disk={res.disk_gb:g}GB")
    return " ".join(parts)


def alternatives_text(entry: Any) -> str:
    """`` any_of: [...] | [...]`` for entries with alternatives; '' otherwise."""
    for key in ("any_of", "ordered"):
        choices = getattr(entry, key, ())
        if choices:
            return f"{key}: " + " | ".join(resources_text(c.resources, c.instance_type) for c in choices)
    return ""


def retry_text(spec: Any) -> str:
    """``2 (backoff 1s)`` or ``0``."""
    retry = spec.retry
    if not retry or not retry.max_retries:
        return "0"
    return f"{retry.max_retries} (backoff {retry.backoff_s:g}s)"


def plan_rows(job: LaunchJob) -> list[list[str]]:
    """Rows of the ``--dryrun`` plan: #, TASK, DEPENDS ON, PRIORITY, RETRIES, RESOURCES."""
    validated = validate(job.tasks, job.source)
    entries = {v.name: (v, e) for v, e in zip(validated, job.tasks, strict=True)}
    rows = []
    for n, spec in enumerate(dependency_order(validated), start=1):
        _, entry = entries[spec.name]
        resources = resources_text(spec.resources, entry.instance_type)
        alts = alternatives_text(entry)
        rows.append(
            [
                str(n),
                spec.name,
                ", ".join(spec.depends_on) or "-",
                str(spec.priority),
                retry_text(spec),
                f"{resources}; {alts}" if alts else resources,
            ]
        )
    return rows


def offer_text(ranked: Any) -> str:
    """One ranked offer (broker RankedOffer message) as ``aws/us-east-1a p4d.24xlarge ... $32.77/h``."""
    offer = ranked.offer
    place = "/".join(p for p in (offer.provider, offer.region, offer.zone) if p)
    accel = f" {offer.accelerator_name}:{offer.accelerator_count}" if offer.accelerator_name else ""
    market = " spot" if ranked.spot else ""
    total = getattr(ranked, "total_hourly_price", 0.0) or ranked.hourly_price
    return (
        f"{place} {offer.instance_type} ({offer.cpus:g} vCPU, {offer.memory_gib:g} GiB{accel}) ${total:.2f}/h{market}"
    )
