"""Process configuration: command-line flags with ``STYX_*`` environment defaults.

Every service takes the same core flags (``--host``, ``--port``, ``--db-url``,
``--ready-file``, ``--log-level``) plus its own; each flag's default comes from an
environment variable so that containers are configured with env alone.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path


def styx_home() -> Path:
    """The directory holding local state: ``$STYX_HOME`` or ``~/.styx``."""
    return Path(os.environ.get("STYX_HOME") or Path.home() / ".styx").expanduser()


def env(name: str, default: str = "") -> str:
    """Read ``STYX_<name>`` from the environment."""
    return os.environ.get(f"STYX_{name}", default)


def default_db_url(service: str) -> str:
    """SQLite file for one service under the Styx home: each service owns its own file."""
    return f"sqlite:///{styx_home() / 'state' / f'{service}.db'}"


@dataclass(frozen=True)
class ServerConfig:
    """What every service needs to start serving."""

    service: str
    host: str
    port: int
    db_url: str
    token: str
    ready_file: Path | None
    log_level: str
    metrics_port: int = 0


def add_server_flags(parser: argparse.ArgumentParser, service: str, default_port: int) -> None:
    """Add the flags every service shares. ``service`` is the short name, e.g. "scheduler"."""
    upper = service.upper()
    parser.add_argument("--host", default=env("HOST", "127.0.0.1"), help="address to bind (STYX_HOST)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(env(f"{upper}_PORT", str(default_port))),
        help=f"port to bind, 0 for any free port (STYX_{upper}_PORT)",
    )
    parser.add_argument(
        "--db-url",
        default=env(f"{upper}_DB_URL") or env("DB_URL"),
        help=f"SQLAlchemy URL of this service's store; default SQLite under STYX_HOME (STYX_{upper}_DB_URL)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write the bound host:port to this file once serving (for launchers and tests)",
    )
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), help="log level (STYX_LOG_LEVEL)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env(f"{upper}_METRICS_PORT", "0")),
        help=f"serve Prometheus /metrics on this port; 0: off (STYX_{upper}_METRICS_PORT)",
    )


def server_config(args: argparse.Namespace, service: str) -> ServerConfig:
    """Build the shared part of a service's config from parsed flags and the environment."""
    return ServerConfig(
        service=service,
        host=args.host,
        port=args.port,
        db_url=args.db_url or default_db_url(service),
        token=load_token(),
        ready_file=args.ready_file,
        log_level=args.log_level,
        metrics_port=args.metrics_port,
    )


def load_token() -> str:
    """The shared bearer token: ``STYX_TOKEN``, else the file named by ``STYX_TOKEN_FILE``.

    An empty token disables authentication, which only ``--insecure-no-auth`` style local
    experiments should do; the local control plane always generates one.
    """
    token = os.environ.get("STYX_TOKEN", "")
    if token:
        return token
    path = os.environ.get("STYX_TOKEN_FILE", "")
    if path:
        return Path(path).read_text().strip()
    return ""
