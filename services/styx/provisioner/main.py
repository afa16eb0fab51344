"""``styx-provisioner``: build the config, load provider plugins, serve styx.v1.Provisioner."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Callable, Sequence

from styx import __version__
from styx.common import config
from styx.common.idempotency import RequestLog
from styx.common.logs import setup_logging
from styx.common.metrics import register_gauges, serve_metrics
from styx.common.server import SHUTDOWN_DEADLINE_S, RunningServer, run_until_signal, start_server, write_ready_file
from styx.common.store import make_engine
from styx.provisioner import tables
from styx.provisioner.core import PLANE_ID, Provisioner
from styx.provisioner.plugins import collect_providers, make_plugin_manager
from styx.provisioner.provider import AgentLaunch
from styx.provisioner.servicer import ProvisionerServicer
from styx.v1 import provisioner_pb2, provisioner_pb2_grpc

log = logging.getLogger(__name__)

SERVICE = "provisioner"
DEFAULT_PORT = 50053


def _plane_id(text: str) -> str:
    if text and not PLANE_ID.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use 1-40 lowercase letters, digits or '-', e.g. 'team-a-prod'")
    return text


def build_parser() -> argparse.ArgumentParser:
    """Flags: the shared server flags plus the endpoints agents it starts must dial."""
    parser = argparse.ArgumentParser(prog="styx-provisioner", description="Styx provisioner service")
    config.add_server_flags(parser, SERVICE, DEFAULT_PORT)
    parser.add_argument(
        "--scheduler",
        default=config.env("SCHEDULER_ENDPOINT", "127.0.0.1:50051"),
        help="scheduler host:port that started agents dial (STYX_SCHEDULER_ENDPOINT)",
    )
    parser.add_argument(
        "--broker",
        default=config.env("BROKER_ENDPOINT", "127.0.0.1:50052"),
        help="broker host:port that started agents dial (STYX_BROKER_ENDPOINT)",
    )
    parser.add_argument(
        "--reconcile-seconds",
        type=float,
        default=float(config.env("PROVISIONER_RECONCILE_SECONDS", "3")),
        help="seconds between reconcile passes (STYX_PROVISIONER_RECONCILE_SECONDS)",
    )
    parser.add_argument(
        "--leak-grace-seconds",
        type=float,
        default=float(config.env("LEAK_GRACE_SECONDS", "60")),
        help="an instance no record owns is terminated once seen this long (STYX_LEAK_GRACE_SECONDS)",
    )
    parser.add_argument(
        "--plane-id",
        default=config.env("PLANE_ID"),
        type=_plane_id,
        help="this control plane's id, labelled styx-plane on every instance it creates; only "
        "instances with this label are ever reaped as leaks. Default: a random id kept in the "
        "store (STYX_PLANE_ID)",
    )
    parser.add_argument(
        "--replica-id",
        default=config.env("REPLICA_ID"),
        help="this replica's name among provisioners sharing one store; it takes its own unfinished "
        "operations back at once after a restart. Default: HOST:PORT (STYX_REPLICA_ID)",
    )
    return parser


def _broker_notifier(endpoint: str, token: str) -> Callable[[str, str], None] | None:
    """Tell the broker a node's instance vanished, so its tasks re-queue without waiting."""
    if not endpoint:
        return None
    from styx.common.clients import DEFAULT_TIMEOUT_S, open_channel
    from styx.common.ids import new_id
    from styx.v1 import broker_pb2, broker_pb2_grpc

    stub = broker_pb2_grpc.ResourceBrokerStub(open_channel(endpoint, token))

    def notify(node_id: str, reason: str) -> None:
        request = broker_pb2.DeregisterNodeRequest(
            request_id=new_id("gone"), node_id=node_id, reason=reason, instance_lost=True
        )
        stub.DeregisterNode(request, timeout=DEFAULT_TIMEOUT_S)

    return notify


def create_server(
    args: argparse.Namespace,
) -> tuple[RunningServer, Provisioner, config.ServerConfig, Callable[[], None]]:
    """Load plugins, start the core and serve; returns the server, the core, the config and
    the function that closes the store."""
    cfg = config.server_config(args, SERVICE)
    providers = collect_providers(make_plugin_manager())
    engine = make_engine(cfg.db_url)
    core = Provisioner(
        engine,
        providers,
        AgentLaunch(args.scheduler, args.broker, token=cfg.token, tls_ca_pem=cfg.tls_ca),
        reconcile_interval_s=args.reconcile_seconds,
        leak_grace_s=args.leak_grace_seconds,
        on_instance_gone=_broker_notifier(args.broker, cfg.token),
        plane_id=args.plane_id,
        replica_id=args.replica_id or (f"{socket.gethostname()}:{cfg.port}" if cfg.port else ""),
    )
    core.start()

    def register(server: object) -> list[str]:
        provisioner_pb2_grpc.add_ProvisionerServicer_to_server(ProvisionerServicer(core), server)
        return [provisioner_pb2.DESCRIPTOR.services_by_name["Provisioner"].full_name]

    running = start_server(
        cfg.host, cfg.port, cfg.token, register, tls=cfg.tls, requests=RequestLog(engine, tables.requests)
    )

    def instance_counts() -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for inst in core.list_instances():
            key = (inst.provider, inst.state.value)
            out[key] = out.get(key, 0) + 1
        return out

    register_gauges(
        {"styx_instances": ("Live instances by provider and state.", ["provider", "state"], instance_counts)}
    )
    serve_metrics(cfg.host, cfg.metrics_port)
    return running, core, cfg, engine.dispose


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``styx-provisioner`` and ``python -m styx.provisioner``."""
    args = build_parser().parse_args(argv)
    setup_logging(SERVICE, args.log_level)
    running, core, cfg, close = create_server(args)
    write_ready_file(cfg.ready_file, cfg.host, running.port)
    clouds = [p.name for p in core.list_providers() if p.enabled and p.name != "local"]
    if clouds and not os.environ.get("STYX_AGENT_INSTALL"):
        log.warning(
            "STYX_AGENT_INSTALL is not set: new cloud VMs will try to install styx==%s from PyPI, where it is "
            "not published yet; set STYX_AGENT_INSTALL to a pip install command for your Styx wheel",
            __version__,
            extra={"providers": clouds},
        )
    log.info(
        "serving",
        extra={
            "host": cfg.host,
            "port": running.port,
            "providers": [p.name for p in core.list_providers()],
            "plane": core.plane_id,
        },
    )
    # In-flight operations stay PENDING/RUNNING in the store and resume at the next start
    # (or on a replica): stopping only waits for them as long as the deadline allows.
    run_until_signal(running, on_stop=lambda: core.stop(timeout_s=SHUTDOWN_DEADLINE_S), close=close)


if __name__ == "__main__":
    main()
