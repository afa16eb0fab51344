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


def parse_envs(
    items: Sequence[str] | None, flag: str = "--env", env_files: Sequence[str] | None = None
) -> dict[str, str]:
    """``--env KEY=VALUE`` flags (``--env KEY`` copies KEY from this shell) into a dict, over
    the ``--env-file`` files (dotenv format, later files win; ``--env`` wins over them).
    ``flag`` names the option in messages (``--secret`` takes the same forms)."""
    envs: dict[str, str] = {}
    for path in env_files or ():
        envs.update(parse_env_file(path))
    for item in items or ():
        key, sep, value = item.partition("=")
        if not key:
            raise CliError(f"{flag}: {item!r} is not KEY=VALUE", EXIT_USAGE)
        _check_name(key, flag)
        if not sep:
            if key not in os.environ:
                raise CliError(f"{flag}: {key} is not set in this shell; use {flag} {key}=VALUE", EXIT_USAGE)
            value = os.environ[key]
        if "\x00" in value:
            raise CliError(f"{flag}: the value of {key} holds a NUL character, which no environment can", EXIT_USAGE)
        envs[key] = value
    return envs


def _check_name(key: str, where: str) -> None:
    from styx.scheduler.model import ENV_NAME, ENV_NAME_RULE

    if not ENV_NAME.match(key):
        raise CliError(f"{where}: {key!r} is not a valid environment variable name ({ENV_NAME_RULE})", EXIT_USAGE)


def parse_env_file(path: str) -> dict[str, str]:
    """A dotenv file: ``KEY=VALUE`` lines (``export`` allowed), ``#`` comments, blank lines;
    values may be quoted ('...' as is, "..." with \\n, \\" and \\\\ escapes)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CliError(f"--env-file {path}: cannot read: {reason}", EXIT_USAGE) from None
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        where = f"--env-file {path}: line {number}"
        if not sep or not key:
            raise CliError(f"{where}: not KEY=VALUE", EXIT_USAGE)
        _check_name(key, where)
        if "\x00" in value:
            raise CliError(f"{where}: the value of {key} holds a NUL character, which no environment can", EXIT_USAGE)
        out[key] = _dotenv_value(value, where)
    return out


_DOTENV_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _dotenv_value(value: str, where: str) -> str:
    if value[:1] == "'":
        end = value.find("'", 1)
        if end < 0:
            raise CliError(f"{where}: the value's closing ' is missing", EXIT_USAGE)
        return value[1:end]
    if value[:1] == '"':
        out, i = [], 1
        while i < len(value) and value[i] != '"':
            if value[i] == "\\" and i + 1 < len(value):
                i += 1
                out.append(_DOTENV_ESCAPES.get(value[i], "\\" + value[i]))
            else:
                out.append(value[i])
            i += 1
        if i >= len(value):
            raise CliError(f"{where}: the value's closing \" is missing", EXIT_USAGE)
        return "".join(out)
    # Unquoted: an inline comment starts at " #".
    return value.split(" #", 1)[0].rstrip()


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
    secrets: Sequence[str] | None = None,
    env_files: Sequence[str] | None = None,
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
        envs=parse_envs(envs, env_files=env_files),
        workdir=workdir,
        priority=priority,
        secrets=parse_envs(secrets, "--secret"),
    )
