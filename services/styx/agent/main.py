"""``styx-agent``: run one node's agent until SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from styx.common import config
from styx.common.logs import setup_logging
from styx.common.secretbox import KEY_ENV as SECRET_KEY_ENV

log = logging.getLogger(__name__)


def _optional_float(text: str) -> float | None:
    return float(text) if text else None


def build_parser() -> argparse.ArgumentParser:
    """The agent's flags; each defaults from a ``STYX_*`` environment variable."""
    p = argparse.ArgumentParser(prog="styx-agent", description="Styx node agent")
    p.add_argument("--node-id", default=config.env("NODE_ID"), help="node id to register as (STYX_NODE_ID)")
    p.add_argument(
        "--scheduler",
        default=config.env("SCHEDULER_ENDPOINT", "127.0.0.1:50051"),
        help="scheduler host:port (STYX_SCHEDULER_ENDPOINT)",
    )
    p.add_argument(
        "--broker",
        default=config.env("BROKER_ENDPOINT", "127.0.0.1:50052"),
        help="broker host:port (STYX_BROKER_ENDPOINT)",
    )
    p.add_argument(
        "--provider",
        default=config.env("AGENT_PROVIDER", "local"),
        help="provider that created this node (STYX_AGENT_PROVIDER)",
    )
    p.add_argument(
        "--instance-id",
        default=config.env("INSTANCE_ID"),
        help="provider's instance id; local default pid-<pid> (STYX_INSTANCE_ID)",
    )
    p.add_argument("--region", default=config.env("AGENT_REGION"), help="region of the node (STYX_AGENT_REGION)")
    p.add_argument("--zone", default=config.env("AGENT_ZONE"), help="zone of the node (STYX_AGENT_ZONE)")
    p.add_argument(
        "--instance-type",
        default=config.env("AGENT_INSTANCE_TYPE"),
        help="instance type of the node (STYX_AGENT_INSTANCE_TYPE)",
    )
    p.add_argument(
        "--address",
        default=config.env("AGENT_ADDRESS"),
        help="address other nodes reach this one at (multi-node tasks' STYX_NODE_IPS); "
        "default: this host's address on the route to the broker (STYX_AGENT_ADDRESS)",
    )
    p.add_argument(
        "--join-token",
        default=config.env("JOIN_TOKEN"),
        help="one-time token a cloud VM's boot script carries; traded for a node token that "
        "is kept in the work dir (STYX_JOIN_TOKEN)",
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="node label; repeatable")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=config.env("AGENT_WORK_DIR") or None,
        help="task sandboxes, logs and state; default $STYX_HOME/agents/<node-id> (STYX_AGENT_WORK_DIR)",
    )
    p.add_argument(
        "--cpus",
        type=_optional_float,
        default=_optional_float(config.env("AGENT_CPUS")),
        help="advertise this many CPUs instead of the detected count (STYX_AGENT_CPUS)",
    )
    p.add_argument(
        "--memory-gib",
        type=_optional_float,
        default=_optional_float(config.env("AGENT_MEMORY_GIB")),
        help="advertise this much memory instead of the detected total (STYX_AGENT_MEMORY_GIB)",
    )
    p.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=float(config.env("AGENT_HEARTBEAT_SECONDS", "2")),
        help="seconds between heartbeats (STYX_AGENT_HEARTBEAT_SECONDS)",
    )
    p.add_argument("--log-level", default=config.env("LOG_LEVEL", "INFO"), help="log level (STYX_LOG_LEVEL)")
    return p


def route_address(endpoint: str) -> str:
    """The local address of the route towards ``endpoint`` (host:port): what other nodes of
    the same network most likely reach this one at. Connecting a UDP socket sends nothing;
    it only picks the route. "127.0.0.1" when there is none."""
    import socket

    host = endpoint.rsplit(":", 1)[0].strip("[]") or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(sockaddr)
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``styx-agent`` and ``python -m styx.agent``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.node_id:
        parser.error("--node-id (or STYX_NODE_ID) is required")
    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    setup_logging("agent", args.log_level)

    # Imported after argument parsing so that --help stays fast.
    from styx.agent.client import NODE_TOKEN_FILE, ControlPlane, Rejected, Stopped, node_token
    from styx.agent.core import Agent, AgentConfig

    instance_id = args.instance_id or (f"pid-{os.getpid()}" if args.provider == "local" else "")
    cfg = AgentConfig(
        node_id=args.node_id,
        work_dir=(args.work_dir or config.styx_home() / "agents" / args.node_id).expanduser().resolve(),
        provider=args.provider,
        instance_id=instance_id,
        region=args.region,
        zone=args.zone,
        instance_type=args.instance_type,
        labels=labels,
        cpus=args.cpus,
        memory_gib=args.memory_gib,
        heartbeat_s=args.heartbeat_seconds,
        address=args.address or route_address(args.broker),
    )
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    token = config.load_token()
    # What the tasks inherit is built from os.environ: drop the credentials here as well,
    # and keep every file the agent and its tasks write private (sandboxes, logs).
    for name in (*config.CREDENTIAL_ENV, SECRET_KEY_ENV):
        os.environ.pop(name, None)
    config.private_files()
    if args.join_token or (cfg.work_dir / NODE_TOKEN_FILE).exists():
        try:
            token = node_token(args.broker, cfg.node_id, args.join_token, cfg.work_dir, stop)
        except (Rejected, Stopped) as exc:
            log.error("could not join the control plane: %s", exc)
            raise SystemExit(2) from None
    control = ControlPlane(args.scheduler, args.broker, token, stop)
    agent = Agent(cfg, control, stop)
    log.info(
        "agent starting",
        extra={
            "node_id": cfg.node_id,
            "scheduler": args.scheduler,
            "broker": args.broker,
            "work_dir": str(cfg.work_dir),
        },
    )
    agent.start()
    stop.wait()
    agent.stop()
    control.close()
    log.info("agent stopped")


if __name__ == "__main__":
    main()
