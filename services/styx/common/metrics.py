"""Prometheus metrics shared by every service.

Each service serves ``/metrics`` on ``--metrics-port`` (0, the default, turns it off). The
server guard records every RPC (count by method and status code, latency histogram);
services add gauges read at scrape time through ``register_gauges``, so nothing is
computed between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

RPCS = Counter("styx_rpc_total", "gRPC calls served, by method and status code.", ["method", "code"], registry=REGISTRY)
RPC_SECONDS = Histogram(
    "styx_rpc_seconds",
    "Time to answer a unary gRPC call (streams: time to the end of the stream).",
    ["method"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def observe_rpc(method: str, code: str, started: float) -> None:
    """Record one finished call."""
    RPCS.labels(method, code).inc()
    RPC_SECONDS.labels(method).observe(time.perf_counter() - started)


# name -> (help, labels, reader returning {label values: value})
GaugeReader = Callable[[], dict[tuple[str, ...], float]]


class _Gauges(Collector):
    def __init__(self, gauges: dict[str, tuple[str, list[str], GaugeReader]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (help_text, labels, read) in self._gauges.items():
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, value in read().items():
                family.add_metric(list(values), value)
            yield family


def register_gauges(gauges: dict[str, tuple[str, list[str], GaugeReader]]) -> None:
    """Add gauges computed at scrape time, e.g. {"styx_tasks": ("Tasks by state", ["state"], fn)}."""
    REGISTRY.register(_Gauges(gauges))


def serve_metrics(host: str, port: int) -> int:
    """Serve /metrics when ``port`` is set; returns the bound port (0: not serving)."""
    if not port:
        return 0
    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    return int(server.server_port)
