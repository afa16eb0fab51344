"""The ``sky`` command: argument parsing and dispatch.

Startup is kept fast: this module imports only the standard library; grpc, rich and the
generated stubs are imported by the subcommand that needs them, so ``sky --help`` and
``sky version`` never load grpc.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from styx_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliError

EPILOG = """\
environment:
  STYX_ENDPOINT            scheduler host:port of a remote control plane (default: local plane)
  STYX_BROKER_ENDPOINT     broker host:port (optional)
  STYX_PROVISIONER_ENDPOINT provisioner host:port (optional)
  STYX_TOKEN, STYX_TOKEN_FILE  bearer token for a remote control plane
  STYX_HOME                local state, logs and config.yaml (default ~/.styx)
  STYX_TIMEOUT             seconds each call may take (default 15)
  NO_COLOR                 disable colours

exit codes: 0 ok, 1 task failed or request refused (sky run: the task's exit code),
            2 usage error, 3 cannot reach or start the control plane, 130 interrupted
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors ("error: ... (see: sky run --help)")."""

    def error(self, message: str) -> None:  # type: ignore[override]  # argparse declares NoReturn
        from styx_cli.output import error

        error(f"{message} (see: {self.prog} --help)")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The full ``sky`` argument parser (no side effects, used by tests too)."""
    parser = _Parser(
        prog="sky",
        description="Styx: run commands on the cheapest compute that fits.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a command as a task and stream its output",
        description="Submit CMD as a task, stream its output and exit with its exit code. "
        "A single argument is run as a bash script as typed: sky run -- 'echo a && echo b'.",
    )
    run.add_argument("--name", help="task name, [A-Za-z0-9._-]{1,63}")
    run.add_argument("--cpus", metavar="N[+]", help="CPUs to reserve; N+ means at least N")
    run.add_argument("--memory", metavar="GiB[+]", help="memory in GiB to reserve; GiB+ means at least")
    run.add_argument(
        "--gpus", metavar="NAME:COUNT", action="append",
        help="accelerators, e.g. A100:8; comma-separate alternatives (A100:8,H100:8)",
    )
    run.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    run.add_argument("--env", metavar="KEY[=VALUE]", action="append", help="environment variable for the task")
    run.add_argument("--workdir", help="working directory on the node (default: the task's sandbox)")
    run.add_argument("-d", "--detach", action="store_true", help="print the task id and return at once")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command to run")
    run.set_defaults(handler="commands:cmd_run")

    status = sub.add_parser("status", help="list tasks, newest first")
    status.add_argument("task", nargs="*", help="only these task ids")
    status.add_argument("--job", help="only tasks of this job")
    status.add_argument("--state", action="append", help="only tasks in this state (repeatable)")
    status.add_argument("--limit", type=int, default=100, help="most tasks to show (default 100)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler="commands:cmd_status")

    logs = sub.add_parser("logs", help="print a task's output")
    logs.add_argument("task", help="task id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    logs.add_argument("--attempt", type=int, default=0, help="attempt to show (default: the latest)")
    logs.set_defaults(handler="commands:cmd_logs")

    cancel = sub.add_parser("cancel", help="cancel tasks")
    cancel.add_argument("task", nargs="+", help="task ids")
    cancel.set_defaults(handler="commands:cmd_cancel")

    stats = sub.add_parser("stats", help="task counts and latencies")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler="commands:cmd_stats")

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(handler="main:cmd_version")

    local = sub.add_parser("local", help="manage the local control plane (up | down | status)")
    local.add_argument("action", choices=("up", "down", "status"))
    local.add_argument("--json", action="store_true", help="status as JSON")
    local.set_defaults(handler="local:cmd_local")
    return parser


def cmd_version(args: argparse.Namespace) -> int:
    """sky version: the installed Styx version (imports no grpc)."""
    from styx import __version__

    print(f"sky (styx) {__version__}")
    return 0


def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    """Import ``styx_cli.<module>`` only now, so unused commands cost nothing at startup."""
    import importlib

    module, name = spec.split(":")
    fn: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(f"styx_cli.{module}"), name)
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sky`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from styx_cli.output import error

    try:
        return _handler(args.handler)(args)
    except CliError as exc:
        error(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `sky logs X | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if os.environ.get("STYX_DEBUG"):
            raise
        error(f"unexpected {type(exc).__name__}: {exc} (set STYX_DEBUG=1 for the traceback)")
        return EXIT_FAILED


def run() -> None:
    """Console-script wrapper: exit with main()'s code."""
    sys.exit(main())


if __name__ == "__main__":
    run()
