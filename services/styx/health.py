"""``python -m styx.health [HOST:PORT]``: exit 0 when the gRPC health service at the
endpoint answers SERVING, 1 otherwise; the images' HEALTHCHECK.

Without an endpoint it checks this container's own service: ``STYX_SERVICE`` (scheduler,
broker or provisioner) on 127.0.0.1 at that service's port (``STYX_<SERVICE>_PORT``, else
its default). TLS follows the clients' rules (``STYX_TLS_CA``). The agent image (``agent``)
serves no gRPC: the broker judges an agent by its heartbeats, so there it exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from styx.common.clients import open_channel

DEFAULT_PORTS = {"scheduler": 50051, "broker": 50052, "provisioner": 50053}


def own_endpoint(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The endpoint of this container's service, from STYX_SERVICE and its port variable;
    '' for the agent, which serves nothing to check."""
    service = environ.get("STYX_SERVICE", "")
    if service == "agent":
        return ""
    if service not in DEFAULT_PORTS:
        raise ValueError(f"STYX_SERVICE={service!r}: set it to one of {', '.join(DEFAULT_PORTS)} or pass HOST:PORT")
    port = environ.get(f"STYX_{service.upper()}_PORT") or str(DEFAULT_PORTS[service])
    return f"127.0.0.1:{port}"


def check(endpoint: str, service: str = "", timeout: float = 3.0) -> bool:
    """Whether ``endpoint`` reports ``service`` ('' = the whole server) as SERVING."""
    channel = open_channel(endpoint, token="")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def main(argv: list[str] | None = None) -> int:
    """Check once and exit 0 (serving) or 1 (not serving, unreachable, or bad arguments)."""
    parser = argparse.ArgumentParser(prog="python -m styx.health", description=__doc__.split("\n\n")[0])
    parser.add_argument("endpoint", nargs="?", default="", help="host:port; default: this container's service")
    parser.add_argument("--service", default="", help="gRPC service name to check; default: the whole server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    try:
        endpoint = args.endpoint or own_endpoint()
    except ValueError as exc:
        print(f"styx.health: {exc}", file=sys.stderr)
        return 1
    if not endpoint:
        return 0
    if check(endpoint, args.service, args.timeout):
        return 0
    print(f"styx.health: {endpoint} is not serving", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
