"""Process configuration: command-line flags with ``STYX_*`` environment defaults.

Every service takes the same core flags (``--host``, ``--port``, ``--db-url``,
``--ready-file``, ``--log-level``) plus its own; each flag's default comes from an
environment variable so that containers are configured with env alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path


class TlsConfigError(Exception):
    """STYX_TLS_CA names a file that cannot be read."""


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
    #: (private key PEM, certificate chain PEM) to serve TLS with; None: plaintext.
    tls: tuple[bytes, bytes] | None = None
    #: PEM of the CA that clients of other services (and new nodes' agents) trust; "" if none.
    tls_ca: str = ""


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
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=env("TLS_CERT") or None,
        help="serve TLS with this PEM certificate chain; clients then need STYX_TLS_CA (STYX_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key", type=Path, default=env("TLS_KEY") or None, help="PEM private key of --tls-cert (STYX_TLS_KEY)"
    )


def server_config(args: argparse.Namespace, service: str) -> ServerConfig:
    """Build the shared part of a service's config from parsed flags and the environment
    (and make the files the service writes private)."""
    private_files()
    return ServerConfig(
        service=service,
        host=args.host,
        port=args.port,
        db_url=args.db_url or default_db_url(service),
        token=load_token(),
        ready_file=args.ready_file,
        log_level=args.log_level,
        metrics_port=args.metrics_port,
        tls=_tls_files(f"styx-{service}", args.tls_cert, args.tls_key),
        tls_ca=_tls_ca(f"styx-{service}"),
    )


def _tls_files(prog: str, cert: Path | None, key: Path | None) -> tuple[bytes, bytes] | None:
    """Read the TLS key pair, or exit with a one-line error naming the flag to fix."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SystemExit(f"{prog}: --tls-cert and --tls-key go together (STYX_TLS_CERT / STYX_TLS_KEY)")
    try:
        return key.read_bytes(), cert.read_bytes()
    except OSError as exc:
        raise SystemExit(f"{prog}: cannot read {exc.filename}: {exc.strerror} (--tls-cert / --tls-key)") from None


def _tls_ca(prog: str) -> str:
    """The CA bundle named by STYX_TLS_CA, checked at start-up rather than at first call."""
    path = env("TLS_CA")
    if not path:
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SystemExit(f"{prog}: STYX_TLS_CA: cannot read {path}: {exc.strerror}") from None


# Set to "1" by whoever starts a service or agent with its token written to its stdin: then
# no credential sits in the process's environment (/proc/PID/environ, readable by the
# tasks the plane runs, since they run as the same user).
TOKEN_STDIN_ENV = "STYX_TOKEN_STDIN"
# Environment variables that carry or point to a credential; never passed on to tasks.
CREDENTIAL_ENV = ("STYX_TOKEN", "STYX_TOKEN_FILE", "STYX_JOIN_TOKEN", TOKEN_STDIN_ENV)
_stdin_token: str | None = None


def load_token() -> str:
    """The bearer token: ``STYX_TOKEN``, else one line of stdin when ``STYX_TOKEN_STDIN=1``,
    else the file named by ``STYX_TOKEN_FILE``; trimmed (a file's trailing newline would
    make an invalid header). Errors name where the token was looked for, never its value.

    An empty token disables authentication, which only ``--insecure-no-auth`` style local
    experiments should do; the local control plane always generates one.
    """
    global _stdin_token
    token = os.environ.get("STYX_TOKEN", "").strip()
    if token:
        return token
    if os.environ.get(TOKEN_STDIN_ENV) == "1":
        if _stdin_token is None:
            _stdin_token = sys.stdin.readline().strip()
        return _stdin_token
    path = os.environ.get("STYX_TOKEN_FILE", "")
    if path:
        try:
            return Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise SystemExit(f"STYX_TOKEN_FILE: cannot read {path}: {reason}") from None
    return ""


def private_files() -> None:
    """Make every file and directory this process creates private to its user (umask 0077):
    state databases, logs, sandboxes, and what tasks started from here write."""
    os.umask(0o077)
