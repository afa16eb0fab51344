"""The ``sky`` command: argument parsing and dispatch.

Startup is kept fast: this module imports only the standard library; grpc and the
generated stubs are imported by the subcommand that needs them, so ``sky --help`` and
``sky version`` never load grpc.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

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


# --arch on run and launch (the task YAML's resources.arch).
ARCH_HELP = "x86_64 or arm64 (alias aarch64) for new nodes; default x86_64 unless an instance type is named"
# --image-id on run and launch (the task YAML's resources.image_id).
IMAGE_HELP = "container image new nodes run (kubernetes pods; it must hold the Styx agent)"


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
    run.add_argument("--arch", metavar="ARCH", help=ARCH_HELP)
    run.add_argument("--image-id", metavar="docker:IMAGE", help=IMAGE_HELP)
    run.add_argument(
        "--gpus",
        metavar="NAME:COUNT",
        action="append",
        help="accelerators, e.g. A100:8; comma-separate alternatives (A100:8,H100:8)",
    )
    run.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    run.add_argument("--env", metavar="KEY[=VALUE]", action="append", help="environment variable for the task")
    _add_secret_options(run)
    run.add_argument("--workdir", help="working directory on the node (default: the task's sandbox)")
    run.add_argument("-d", "--detach", action="store_true", help="print the task id and return at once")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command to run")
    run.set_defaults(handler="commands:cmd_run")

    launch = sub.add_parser(
        "launch",
        help="run a task YAML (or a command) as a job and stream its output",
        description="Submit FILE.yaml (one task, or a pipeline/DAG of several YAML documents) or the "
        "command after -- as a job, stream each task's output (prefixed with the task name when the job "
        "has several), print a line per task and exit 0 when the job succeeded (a one-task job exits with "
        "its task's exit code, like sky run). Overrides apply to every task of the file.",
    )
    _add_task_options(launch)
    launch.add_argument(
        "-c",
        "--cluster",
        metavar="NAME",
        help="run on the named cluster, creating it first (its nodes serve only its tasks)",
    )
    launch.add_argument(
        "-i",
        "--idle-minutes",
        type=int,
        default=0,
        metavar="N",
        help="with -c: stop the cluster (or tear it down with --down) after N idle minutes",
    )
    launch.add_argument("--down", action="store_true", help="with -c and -i: autostop tears the cluster down")
    launch.set_defaults(handler="launch:cmd_launch")

    execute = sub.add_parser(
        "exec",
        help="run a task YAML (or a command) on an existing cluster, no provisioning",
        description="Like sky launch, on the nodes of a cluster made with sky launch -c NAME.",
    )
    execute.add_argument("cluster", metavar="CLUSTER", help="the cluster to run on")
    _add_task_options(execute)
    execute.set_defaults(handler="launch:cmd_launch", exec_mode=True)

    for action, text in (
        ("down", "tear clusters down (terminate their nodes)"),
        ("stop", "stop clusters' instances (disks kept; not on the local provider)"),
        ("start", "start stopped clusters again"),
    ):
        cmd = sub.add_parser(action, help=text)
        cmd.add_argument("clusters", nargs="+", metavar="CLUSTER")
        cmd.set_defaults(handler="clusters:cmd_cluster_action", action=action)

    autostop = sub.add_parser("autostop", help="tear a cluster down after it has been idle for a while")
    autostop.add_argument("cluster", metavar="CLUSTER")
    autostop.add_argument("-i", "--idle-minutes", type=int, metavar="N", help="idle minutes before autostop")
    autostop.add_argument("--down", action="store_true", help="tear down instead of stopping")
    autostop.add_argument("--cancel", action="store_true", help="turn autostop off")
    autostop.set_defaults(handler="clusters:cmd_autostop")

    queue = sub.add_parser("queue", help="list jobs, or one job's tasks")
    queue.add_argument("job", nargs="?", help="a job id (j-...): show its tasks")
    queue.add_argument(
        "-a", "--all", action="store_true", help="list every job (up to 1000), not the newest 50; with JOB, every task"
    )
    queue.add_argument("--json", action="store_true", help="print JSON instead of a table")
    queue.set_defaults(handler="commands:cmd_queue")

    status = sub.add_parser("status", help="list tasks grouped by job, newest first")
    status.add_argument("task", nargs="*", help="only these task ids")
    status.add_argument("--job", help="only tasks of this job")
    status.add_argument("--state", action="append", help="only tasks in this state (repeatable)")
    status.add_argument("--limit", type=int, default=200, help="most tasks to show (default 200)")
    status.add_argument("-a", "--all", action="store_true", help="show every task (up to 10000)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also each task's provisioning attempts (offer, outcome, error) and recent events",
    )
    status.set_defaults(handler="commands:cmd_status")

    logs = sub.add_parser("logs", help="print a task's output")
    logs.add_argument("task", help="task id (or the job id of a one-task job)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    logs.add_argument("--attempt", type=int, default=0, help="attempt to show (default: the latest)")
    logs.add_argument("--rank", type=int, default=0, help="node rank of a multi-node task to show (default 0)")
    logs.add_argument("--tail", type=int, metavar="N", help="start from the last N lines (0: only new output)")
    logs.set_defaults(handler="commands:cmd_logs")

    cancel = sub.add_parser("cancel", help="cancel jobs (j-...) or tasks (t-...)")
    cancel.add_argument(
        "ids", nargs="+", metavar="JOB|TASK", help="job ids (all the job's unfinished tasks) or task ids"
    )
    cancel.set_defaults(handler="commands:cmd_cancel")

    stats = sub.add_parser("stats", help="task counts, latencies and throughput, overall and per priority")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler="commands:cmd_stats")

    _add_catalog_commands(sub)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(handler="main:cmd_version")

    api = sub.add_parser("api", help="the gRPC contract: `sky api proto DIR` writes the .proto files")
    api_actions = api.add_subparsers(dest="api_action", metavar="ACTION", parser_class=_Parser, required=True)
    proto = api_actions.add_parser("proto", help="write styx/v1/*.proto under DIR (for protoc / buf generate)")
    proto.add_argument("dir", metavar="DIR", help="directory to write into (created if missing)")
    proto.set_defaults(handler="api:cmd_api_proto")

    ssh = sub.add_parser(
        "ssh",
        help="SSH node pools: check and prepare hosts (up) or remove Styx from them (down)",
        description="Pools live in $STYX_HOME/ssh_node_pools.yaml (or STYX_SSH_NODE_POOLS), SkyPilot's format: "
        "POOL: {hosts: [ADDR | {ip, user, identity_file, port}], user, identity_file, password, proxy_jump, "
        "accept_new_host_keys, known_hosts}. up: connect to each host, probe CPUs, memory and GPUs, build the "
        "agent's wheels. down: terminate the pool's Styx nodes and remove ~/.styx-ssh from its hosts. "
        "Launch on a pool with: sky launch --infra ssh/POOL.",
    )
    ssh.add_argument("action", choices=("up", "down"))
    ssh.add_argument("pool", nargs="?", metavar="POOL", help="only this pool (default: every pool)")
    ssh.set_defaults(handler="ssh:cmd_ssh")

    local = sub.add_parser("local", help="manage the local control plane (up | down | status)")
    local.add_argument("action", choices=("up", "down", "status"))
    local.add_argument("--json", action="store_true", help="status as JSON")
    tls = local.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls",
        dest="tls",
        action="store_true",
        default=None,
        help="up: serve TLS with a CA made for this home (kept in STYX_HOME/local/tls; later starts keep TLS)",
    )
    tls.add_argument("--no-tls", dest="tls", action="store_false", help="up: serve plaintext (forgets the local CA)")
    local.set_defaults(handler="local:cmd_local")
    return parser


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    """The task and override options shared by sky launch and sky exec."""
    parser.add_argument(
        "entrypoint",
        nargs="*",
        metavar="FILE.yaml | -- CMD",
        help="a task YAML file (.yaml/.yml), or the command to run after --",
    )
    parser.add_argument("--name", help="job name (and task name for a one-task job)")
    parser.add_argument("--cpus", metavar="N[+]", help="override CPUs of every task; N+ means at least N")
    parser.add_argument("--memory", metavar="GiB[+]", help="override memory of every task")
    parser.add_argument("--arch", metavar="ARCH", help="override the CPU architecture of every task: " + ARCH_HELP)
    parser.add_argument("--image-id", metavar="docker:IMAGE", help="override every task's image_id: " + IMAGE_HELP)
    parser.add_argument(
        "--gpus",
        metavar="NAME:COUNT",
        help="override accelerators, e.g. A100:8; comma-separate alternatives (A100:8,H100:8)",
    )
    parser.add_argument(
        "--use-spot",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use (or, with --no-use-spot, avoid) spot capacity for new nodes",
    )
    parser.add_argument(
        "--env",
        metavar="KEY[=VALUE]",
        action="append",
        help="environment variable for every task (KEY alone copies it from this shell)",
    )
    _add_secret_options(parser)
    parser.add_argument("--infra", metavar="PROVIDER[/REGION[/ZONE]]", help="where tasks may run, e.g. local")
    parser.add_argument(
        "--num-nodes", type=int, metavar="N", help="run every task on N nodes at once (a gang; the YAML's num_nodes)"
    )
    parser.add_argument("--priority", type=int, help="override the priority of every task (higher runs first)")
    parser.add_argument("--retries", type=int, metavar="N", help="retry each failed task up to N times")
    parser.add_argument(
        "--workdir", metavar="DIR", help="local directory shipped with the job (overrides the file's workdir)"
    )
    parser.add_argument(
        "-d", "--detach", action="store_true", help="print the job id and task ids and return once submitted"
    )
    parser.add_argument(
        "--dryrun", action="store_true", help="print the plan (tasks in order, resources, offers) without submitting"
    )
    parser.add_argument("-y", "--yes", action="store_true", help="accepted for SkyPilot compatibility (no prompt)")


def _add_secret_options(parser: argparse.ArgumentParser) -> None:
    """--env-file and --secret, shared by sky run, launch and exec."""
    parser.add_argument(
        "--env-file", metavar="FILE", action="append", help="dotenv file of KEY=VALUE lines (--env wins over it)"
    )
    parser.add_argument(
        "--secret",
        metavar="KEY[=VALUE]",
        action="append",
        help="secret environment variable, redacted in every output (KEY alone copies it from this shell)",
    )


def _add_catalog_commands(sub: Any) -> None:
    """sky check, sky show-gpus, sky catalog import | list (implemented in styx_cli.catalog)."""
    check = sub.add_parser(
        "check",
        help="list the provider plugins, enabled or not, and how to enable them",
        description="List every provider plugin the provisioner loaded; for a disabled one, why and the fix.",
    )
    check.add_argument("provider", nargs="*", help="only these providers (e.g. aws gcp)")
    check.add_argument("--json", action="store_true", help="print JSON instead of text")
    check.set_defaults(handler="catalog:cmd_check")

    gpus = sub.add_parser(
        "show-gpus",
        help="list accelerators with their counts, providers and cheapest prices",
        description="Without NAME: every accelerator of the catalog, the counts per instance, and the cheapest "
        "on-demand and spot price per provider. With NAME (or NAME:COUNT): its offers, cheapest first, one row "
        "per instance type (its cheapest region).",
    )
    gpus.add_argument("name", nargs="?", metavar="NAME[:COUNT]", help="an accelerator, e.g. A100 or A100:8")
    gpus.add_argument("--infra", metavar="PROVIDER[/REGION]", help="only this provider (and region)")
    gpus.add_argument("-a", "--all", action="store_true", help="also providers that are disabled (see sky check)")
    gpus.add_argument("--json", action="store_true", help="print JSON instead of a table")
    gpus.set_defaults(handler="catalog:cmd_show_gpus")

    catalog = sub.add_parser(
        "catalog",
        help="import offer catalogs (import) or list the broker's catalog (list)",
        description="Manage the broker's offer catalog.",
    )
    catalog.set_defaults(handler="catalog:cmd_catalog", action=None)
    actions = catalog.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    imp = actions.add_parser(
        "import",
        help="import SkyPilot v8 catalogs (DIR/<provider>/vms.csv)",
        description="Read DIR/<provider>/vms.csv (SkyPilot v8 catalogs, e.g. aws, gcp, azure) here and replace "
        "those providers' offers in the broker's catalog (built-in offers included); other providers keep theirs.",
    )
    imp.add_argument("directory", metavar="DIR", help="the catalog directory")
    imp.add_argument("--format", default="skypilot", help="catalog format (default: skypilot)")
    imp.add_argument(
        "--provider",
        action="append",
        metavar="NAME",
        help="only this provider's vms.csv (repeatable; default: every one in DIR)",
    )
    imp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    imp.set_defaults(handler="catalog:cmd_catalog")
    refresh = actions.add_parser(
        "refresh",
        help="rebuild providers' catalogs from their clouds' own APIs (needs credentials)",
        description="Ask each provider plugin for its catalog as its cloud reports it (instance types per zone, "
        "priced from the built-in prices where the cloud has no pricing API) and import it into the broker.",
    )
    refresh.add_argument("providers", nargs="+", metavar="PROVIDER", help="e.g. aws")
    refresh.add_argument("--region", action="append", help="only this region (repeatable)")
    refresh.set_defaults(handler="catalog:cmd_catalog")
    lst = actions.add_parser("list", help="providers of the catalog, offer counts, built-in or imported")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(handler="catalog:cmd_catalog")


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


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; usage errors exit 2 through ``parser.error``."""
    args, extras = parser.parse_known_args(argv)
    if extras and extras[0] == "--" and getattr(args, "entrypoint", None) == []:
        # `sky exec CLUSTER --env A=1 -- CMD`: argparse gives the command positional its
        # empty match right after CLUSTER, so the command after options comes back unparsed.
        args.entrypoint, extras = extras[1:], []
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sky`` console script; returns the process exit code."""
    parser = build_parser()
    args = parse(parser, argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from styx.common.config import TlsConfigError
    from styx_cli.output import error

    try:
        return _handler(args.handler)(args)
    except CliError as exc:
        error(exc.message)
        return exc.exit_code
    except TlsConfigError as exc:
        error(str(exc))
        return EXIT_USAGE
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
