"""``styx-scheduler``: serve styx.v1.Scheduler and styx.v1.AgentGateway."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from styx.common.config import add_server_flags, env, server_config
from styx.common.idempotency import RequestLog
from styx.common.logs import setup_logging
from styx.common.metrics import register_gauges, serve_metrics
from styx.common.secretbox import SecretBox, SecretKeyError
from styx.common.server import run_until_signal, start_server, write_ready_file
from styx.common.store import make_engine
from styx.scheduler import tables
from styx.scheduler.broker_client import GrpcBroker
from styx.scheduler.core import Scheduler
from styx.scheduler.model import DEFAULT_NODE_FENCE_S
from styx.scheduler.servicer import AgentGatewayServicer, SchedulerServicer
from styx.v1 import agent_pb2, agent_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger("styx.scheduler")


def build_parser() -> argparse.ArgumentParser:
    """Flags of styx-scheduler."""
    parser = argparse.ArgumentParser(prog="styx-scheduler", description="Styx scheduler")
    add_server_flags(parser, "scheduler", default_port=50051)
    parser.add_argument(
        "--broker", default=env("BROKER_ENDPOINT"), help="resource broker host:port (STYX_BROKER_ENDPOINT)"
    )
    parser.add_argument(
        "--dispatch-lease-seconds",
        type=float,
        default=float(env("DISPATCH_LEASE_SECONDS", "10")),
        help="with several replicas, how long the dispatching replica's lease lasts (STYX_DISPATCH_LEASE_SECONDS)",
    )
    parser.add_argument(
        "--starvation-seconds",
        type=float,
        default=float(env("STARVATION_SECONDS", "60")),
        help="a task waiting this long stops lower-priority backfill around it (STYX_STARVATION_SECONDS)",
    )
    parser.add_argument(
        "--node-fence-seconds",
        type=float,
        default=float(env("NODE_FENCE_SECONDS", str(DEFAULT_NODE_FENCE_S))),
        help="re-queue the tasks of a LOST node this long after its last heartbeat, when its agent has "
        "killed them itself; keep it a few seconds over the broker's --lease-seconds "
        "(STYX_NODE_FENCE_SECONDS, default %(default)s)",
    )
    parser.add_argument(
        "--secret-key-file",
        type=Path,
        default=env("SECRET_KEY_FILE") or None,
        help="Fernet key that encrypts tasks' secrets in the store, created 0600 when missing; "
        "STYX_SECRET_KEY (the key itself) wins (STYX_SECRET_KEY_FILE, default $STYX_HOME/local/secret.key)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the styx-scheduler console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.broker:
        parser.error("--broker is required (or set STYX_BROKER_ENDPOINT)")
    cfg = server_config(args, "scheduler")
    setup_logging("scheduler", cfg.log_level)
    try:
        secrets = SecretBox.from_env_or_file(args.secret_key_file)
    except SecretKeyError as exc:
        parser.error(str(exc))
    engine = make_engine(cfg.db_url)
    core = Scheduler(
        engine,
        GrpcBroker(args.broker, cfg.token),
        starvation_s=args.starvation_seconds,
        lease_s=args.dispatch_lease_seconds,
        node_fence_s=args.node_fence_seconds,
        secrets=secrets,
    )

    def register(server: object) -> list[str]:
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(core), server)
        agent_pb2_grpc.add_AgentGatewayServicer_to_server(AgentGatewayServicer(core), server)
        return [
            scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
            agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name,
        ]

    requests = RequestLog(engine, tables.requests, digest_key=secrets.derive(b"request-digest"))
    running = start_server(cfg.host, cfg.port, cfg.token, register, max_workers=256, tls=cfg.tls, requests=requests)
    register_gauges(
        {"styx_tasks": ("Tasks by state.", ["state"], lambda: {(k,): v for k, v in core.count_by_state().items()})}
    )
    serve_metrics(cfg.host, cfg.metrics_port)
    threading.Thread(target=core.run_loop, name="dispatch", daemon=True).start()
    write_ready_file(cfg.ready_file, cfg.host, running.port)
    log.info("serving", extra={"port": running.port, "db": cfg.db_url.split("://")[0], "replica": core.replica_id})
    run_until_signal(running, on_stop=core.stop, close=engine.dispose)


if __name__ == "__main__":
    main()
