"""A WatchEvents stream outlives many keepalive intervals of a client that pings hard.

The client pings every 100 ms (grpc-js / grpc-go / grpc-java send the same PING frames,
only less often); the plane's policy (styx.common.keepalive, with short intervals here)
accepts them and pings back. A gRPC server with the default policy answers the same
client with GOAWAY "too_many_pings" within a few pings: that control shows the test
notices the difference. Elapsed time is what is being tested, so the tests wait on the
wall clock for a fixed number of intervals.
"""

from __future__ import annotations

import queue
import threading
import uuid
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contract_plane import TOKEN, serve_plane
from styx.common.keepalive import Keepalive
from styx.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

PING_MS = 100
INTERVALS = 25  # the stream lives through 2.5 s of pings before the event comes
PINGING = [
    ("grpc.keepalive_time_ms", PING_MS),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def _drain(stream, out: queue.Queue) -> None:  # type: ignore[no-untyped-def]
    try:
        for item in stream:
            out.put(item)
    except grpc.RpcError as err:
        out.put(err)


def test_watch_events_outlives_many_client_keepalive_pings(tmp_path: Path) -> None:
    policy = Keepalive(ping_s=0.3, timeout_s=2.0, min_client_ping_s=0.05)
    with serve_plane(tmp_path, keepalive=policy) as plane:
        channel = grpc.insecure_channel(plane.endpoint, options=PINGING)
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        stream = stub.WatchEvents(scheduler_pb2.WatchEventsRequest(), metadata=metadata, timeout=30)
        got: queue.Queue = queue.Queue()
        threading.Thread(target=_drain, args=(stream, got), daemon=True).start()
        quiet = threading.Event()
        quiet.wait(INTERVALS * PING_MS / 1000)  # a quiet stream while the client keeps pinging
        assert got.empty(), got.get()  # no error came in the meantime
        job = scheduler_pb2.JobSpec(tasks=[common_pb2.TaskSpec(name="t", run="true")])
        plane.sched.SubmitJob(scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=job), timeout=10)
        event = got.get(timeout=10)
        assert isinstance(event, common_pb2.Event), event
        assert event.type == common_pb2.EVENT_TYPE_SUBMITTED
        stream.cancel()
        channel.close()


def test_control_a_default_grpc_server_drops_the_same_client() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=PINGING)
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        got: queue.Queue = queue.Queue()
        threading.Thread(target=_drain, args=(stream, got), daemon=True).start()
        assert got.get(timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        ended = got.get(timeout=20)
        assert isinstance(ended, grpc.RpcError)
        assert ended.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
        channel.close()
    finally:
        server.stop(0)
