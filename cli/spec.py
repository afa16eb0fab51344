"""Turning ``sky run`` flags into a styx.v1 TaskSpec (validated before any connection)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from typing import Any

from styx_cli.errors import EXIT_USAGE, CliError


def command_to_script(command: Sequence[str]) -> str:
    """The bash script for ``sky run -- CMD...``.

    One argument is taken as a script as typed (``sky run -- 'echo a && echo b'``); several
    are joined with shlex.join, which quotes each so the task sees exactly this argv.
    """
    args = list(command)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise CliError("sky run: missing the command to run, e.g. sky run -- echo hello", EXIT_USAGE)
    if len(args) == 1:
        return args[0]
    return shlex.join(args)


def parse_envs(items: Sequence[str] | None) -> dict[str, str]:
    """``--env KEY=VALUE`` flags (``--env KEY`` copies KEY from this shell) into a dict."""

    envs: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not key:
            raise CliError(f"--env: {item!r} is not KEY=VALUE", EXIT_USAGE)
        if not sep:
            if key not in os.environ:
                raise CliError(f"--env: {key} is not set in this shell; use --env {key}=VALUE", EXIT_USAGE)
            value = os.environ[key]
        envs[key] = value
    return envs


def build_task_spec(
    command: Sequence[str],
    name: str = "",
    cpus: str | None = None,
    memory: str | None = None,
    gpus: Sequence[str] | None = None,
    arch: str | None = None,
    image_id: str | None = None,
    priority: int = 0,
    envs: Sequence[str] | None = None,
    workdir: str = "",
) -> Any:
    """A styx.v1.TaskSpec from ``sky run`` flags; bad values raise CliError (exit 2) naming the flag."""
    from styx.common.errors import InvalidArgument
    from styx.common.resources import parse_accelerator, parse_amount, parse_arch, parse_image_id
    from styx.v1 import common_pb2

    resources = common_pb2.ResourceRequest()
    try:
        if cpus is not None:
            resources.cpus, resources.cpus_at_least = parse_amount(cpus, "--cpus")
        if memory is not None:
            resources.memory_gib, resources.memory_at_least = parse_amount(memory, "--memory")
        for text in gpus or ():
            for alt in text.split(","):
                accel = parse_accelerator(alt, "--gpus")
                resources.accelerators.add(name=accel.name, count=accel.count)
        if arch is not None:
            resources.arch = parse_arch(arch, "--arch")
        if image_id is not None:
            resources.image_id = parse_image_id(image_id, "--image-id")
    except InvalidArgument as exc:
        raise CliError(exc.message, EXIT_USAGE) from None
    return common_pb2.TaskSpec(
        name=name,
        resources=resources,
        run=command_to_script(command),
        envs=parse_envs(envs),
        workdir=workdir,
        priority=priority,
    )
