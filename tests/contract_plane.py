"""A scheduler and a broker served in this process over real gRPC on loopback, for contract tests.

Both cores run on their own SQLite stores; the broker has a static offer and no
provisioner behind it, and no dispatch loop runs, so submitted tasks stay PENDING. The
server is styx.common.server's, with its interceptor (auth, validation, rich errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from helpers import InProcessBroker
from styx.broker.core import Broker
from styx.broker.servicer import BrokerServicer
from styx.common.clients import open_channel
from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.common.idempotency import RequestLog
from styx.common.keepalive import DEFAULT, Keepalive
from styx.common.offers import Offer
from styx.common.server import RunningServer, start_server
from styx.common.store import make_engine
from styx.scheduler import tables
from styx.scheduler.core import Scheduler
from styx.scheduler.servicer import AgentGatewayServicer, SchedulerServicer
from styx.v1 import agent_pb2, agent_pb2_grpc, broker_pb2, broker_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

TOKEN = "contract-test-token"


class StaticOffers:
    """A provisioner port that offers one small host and never creates anything."""

    def list_offers(self) -> list[Offer]:
        return [Offer("local", "local", "", "host", 4, 8, "", 0, max_instances=1)]

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        return f"op-{node_id}"

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        return "running", ""


@dataclass
class Plane:
    """The running server, its cores and stubs with the shared token."""

    server: RunningServer
    scheduler: Scheduler
    broker: Broker
    channel: grpc.Channel

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def sched(self) -> scheduler_pb2_grpc.SchedulerStub:
        return scheduler_pb2_grpc.SchedulerStub(self.channel)

    @property
    def brk(self) -> broker_pb2_grpc.ResourceBrokerStub:
        return broker_pb2_grpc.ResourceBrokerStub(self.channel)


@contextmanager
def serve_plane(
    tmp_path: Path, token: str = TOKEN, clock: Clock = SYSTEM_CLOCK, keepalive: Keepalive = DEFAULT
) -> Iterator[Plane]:
    """Start the plane on SQLite files under ``tmp_path``; the same path reopens the same stores
    (a restart), and two planes on one path at once are two replicas. Request ids are kept
    in the scheduler's store, on ``clock``."""
    sched_engine = make_engine(f"sqlite:///{tmp_path / 'scheduler.db'}")
    broker_engine = make_engine(f"sqlite:///{tmp_path / 'broker.db'}")
    broker = Broker(broker_engine, StaticOffers())
    scheduler = Scheduler(sched_engine, InProcessBroker(broker))

    def register(server: grpc.Server) -> list[str]:
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(scheduler), server)
        agent_pb2_grpc.add_AgentGatewayServicer_to_server(AgentGatewayServicer(scheduler), server)
        broker_pb2_grpc.add_ResourceBrokerServicer_to_server(BrokerServicer(broker, token), server)
        return [
            scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
            agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name,
            broker_pb2.DESCRIPTOR.services_by_name["ResourceBroker"].full_name,
        ]

    requests = RequestLog(sched_engine, tables.requests, clock)
    server = start_server("127.0.0.1", 0, token, register, max_workers=16, requests=requests, keepalive=keepalive)
    channel = open_channel(f"127.0.0.1:{server.port}", token)
    try:
        yield Plane(server, scheduler, broker, channel)
    finally:
        channel.close()
        server.stop(0)
        scheduler.stop()
        sched_engine.dispose()
        broker_engine.dispose()
