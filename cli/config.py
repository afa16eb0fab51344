"""Where the CLI sends its calls: a remote control plane, or the local one.

Precedence, highest first: environment (``STYX_ENDPOINT``, ``STYX_BROKER_ENDPOINT``,
``STYX_PROVISIONER_ENDPOINT``, ``STYX_TOKEN`` / ``STYX_TOKEN_FILE``), then
``$STYX_HOME/config.yaml`` (keys ``endpoint``, ``broker_endpoint``,
``provisioner_endpoint``, ``token``, ``token_file``). With no scheduler endpoint in either,
the CLI uses (and if needed starts) the local control plane.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from styx_cli.errors import EXIT_USAGE, CliError

CONFIG_KEYS = ("endpoint", "broker_endpoint", "provisioner_endpoint", "token", "token_file")


@dataclass(frozen=True)
class Target:
    """Endpoints and token of the control plane the CLI talks to."""

    scheduler: str
    broker: str = ""
    provisioner: str = ""
    # repr=False: never print the token, even in a debug repr.
    token: str = field(default="", repr=False)
    # True when this is the embedded plane under STYX_HOME (started on demand).
    local: bool = False
    #: CA file the plane's certificates chain to ("" : STYX_TLS_CA / STYX_TLS decide).
    tls_ca: str = ""
    #: The plane is known to serve plaintext (the local one without TLS): ignore STYX_TLS_*.
    plaintext: bool = False


def styx_home(env: Mapping[str, str] | None = None) -> Path:
    """``$STYX_HOME`` or ``~/.styx`` (same rule as the services' ``styx.common.config``)."""
    env = os.environ if env is None else env
    return Path(env.get("STYX_HOME") or Path.home() / ".styx").expanduser()


def load_config_file(home: Path) -> dict[str, str]:
    """Read ``home/config.yaml``; {} when absent. PyYAML is imported only if the file exists."""
    path = home / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}", EXIT_USAGE) from exc
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a mapping with keys {', '.join(CONFIG_KEYS)}", EXIT_USAGE)
    unknown = sorted(set(map(str, data)) - set(CONFIG_KEYS))
    if unknown:
        raise CliError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(CONFIG_KEYS)}", EXIT_USAGE)
    return {str(k): str(v) for k, v in data.items() if v is not None}


def remote_target(env: Mapping[str, str] | None = None, home: Path | None = None) -> Target | None:
    """The configured remote control plane, or None when the local one should be used."""
    env = os.environ if env is None else env
    home = styx_home(env) if home is None else home
    file_cfg = load_config_file(home)

    def pick(env_name: str, key: str) -> str:
        return (env.get(env_name) or file_cfg.get(key) or "").strip()

    scheduler = pick("STYX_ENDPOINT", "endpoint")
    if not scheduler:
        return None
    token = (env.get("STYX_TOKEN") or "").strip()
    if not token:
        token_file = pick("STYX_TOKEN_FILE", "token_file")
        if token_file:
            try:
                token = Path(token_file).expanduser().read_text().strip()
            except OSError as exc:
                raise CliError(f"cannot read the token file {token_file}: {exc.strerror}", EXIT_USAGE) from exc
        else:
            token = file_cfg.get("token", "").strip()
    return Target(
        scheduler=scheduler,
        broker=pick("STYX_BROKER_ENDPOINT", "broker_endpoint"),
        provisioner=pick("STYX_PROVISIONER_ENDPOINT", "provisioner_endpoint"),
        token=token,
        local=False,
    )


def resolve_target(env: Mapping[str, str] | None = None) -> Target:
    """The remote target if configured, else the local plane (started when not running)."""
    env = os.environ if env is None else env
    home = styx_home(env)
    remote = remote_target(env, home)
    if remote is not None:
        return remote
    from styx import localplane
    from styx_cli.output import info

    before = localplane.status(home)
    if not before.running:
        info("starting the local control plane (scheduler, broker, provisioner) ...")
    try:
        plane = localplane.ensure(home)
    except localplane.PlaneError as exc:
        from styx_cli.errors import EXIT_UNREACHABLE

        raise CliError(f"cannot start the local control plane: {exc}", EXIT_UNREACHABLE) from exc
    return Target(
        scheduler=plane.scheduler,
        broker=plane.broker,
        provisioner=plane.provisioner,
        token=plane.token,
        local=True,
        tls_ca=plane.tls_ca,
        plaintext=not plane.tls,
    )
