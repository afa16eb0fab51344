"""``styx-broker``: serve styx.v1.ResourceBroker."""

from __future__ import annotations

import argparse
import logging
import socket
import threading

from styx.broker import tables
from styx.broker.catalog import Catalog, builtin_offers
from styx.broker.core import Broker
from styx.broker.provisioner_client import GrpcProvisioner
from styx.broker.servicer import BrokerServicer
from styx.common.config import add_server_flags, env, server_config
from styx.common.idempotency import RequestLog
from styx.common.logs import setup_logging
from styx.common.metrics import register_gauges, serve_metrics
from styx.common.server import run_until_signal, start_server, write_ready_file
from styx.common.store import make_engine
from styx.v1 import broker_pb2, broker_pb2_grpc

log = logging.getLogger("styx.broker")


def build_parser() -> argparse.ArgumentParser:
    """Flags of styx-broker."""
    parser = argparse.ArgumentParser(prog="styx-broker", description="Styx resource broker")
    add_server_flags(parser, "broker", default_port=50052)
    parser.add_argument(
        "--provisioner",
        default=env("PROVISIONER_ENDPOINT"),
        help="provisioner host:port; empty: only hand-registered nodes (STYX_PROVISIONER_ENDPOINT)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=float(env("LEASE_SECONDS", "15")),
        help="a node without heartbeat for this long is marked LOST (STYX_LEASE_SECONDS)",
    )
    parser.add_argument(
        "--builtin-catalog",
        action=argparse.BooleanOptionalAction,
        default=env("BUILTIN_CATALOG", "1") not in ("0", "false", "no"),
        help="start from the built-in AWS/GCP/Azure offer catalog; imported catalogs replace it per "
        "provider (STYX_BUILTIN_CATALOG, default on)",
    )
    parser.add_argument(
        "--replica-id",
        default=env("REPLICA_ID", ""),
        help="this replica's name among brokers sharing one PostgreSQL store (STYX_REPLICA_ID; default HOST:PORT)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the styx-broker console script."""
    args = build_parser().parse_args(argv)
    cfg = server_config(args, "broker")
    setup_logging("broker", cfg.log_level)
    provisioner = GrpcProvisioner(args.provisioner, cfg.token) if args.provisioner else None
    catalog = Catalog(builtin_offers()) if args.builtin_catalog else Catalog()
    replica_id = args.replica_id or (f"{socket.gethostname()}:{cfg.port}" if cfg.port else "")
    engine = make_engine(cfg.db_url)
    broker = Broker(
        engine,
        provisioner,
        lease_seconds=args.lease_seconds,
        catalog=catalog,
        replica_id=replica_id,
    )

    def register(server: object) -> list[str]:
        broker_pb2_grpc.add_ResourceBrokerServicer_to_server(BrokerServicer(broker, cfg.token), server)
        return [broker_pb2.DESCRIPTOR.services_by_name["ResourceBroker"].full_name]

    running = start_server(
        cfg.host, cfg.port, cfg.token, register, tls=cfg.tls, requests=RequestLog(engine, tables.requests)
    )
    register_gauges(
        {
            "styx_nodes": ("Nodes by provider and state.", ["provider", "state"], broker.node_counts),
            "styx_allocations": ("Live allocations.", [], lambda: {(): float(broker.allocation_count())}),
        }
    )
    serve_metrics(cfg.host, cfg.metrics_port)
    stop = threading.Event()

    def reconcile_loop() -> None:
        while not stop.wait(1.0):
            try:
                broker.reconcile()
            except Exception:
                log.exception("reconcile failed")

    threading.Thread(target=reconcile_loop, name="reconcile", daemon=True).start()
    write_ready_file(cfg.ready_file, cfg.host, running.port)
    log.info("serving", extra={"port": running.port, "db": cfg.db_url.split("://")[0]})

    def on_stop() -> None:
        stop.set()
        broker.stop()

    run_until_signal(running, on_stop=on_stop, close=engine.dispose)


if __name__ == "__main__":
    main()
