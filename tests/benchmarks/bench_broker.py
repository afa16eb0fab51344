"""Broker benchmark: catalog load, optimizer latency, placement throughput. Prints; asserts nothing.

Run: ``python tests/benchmarks/bench_broker.py`` (``--catalogs DIR`` for another SkyPilot v8
catalog tree; default ../shared/catalogs next to the repository; ``--db-url`` to place on
PostgreSQL instead of a temporary SQLite file).

Measured:
- catalog load: reading every ``<provider>/vms.csv`` and building the index (best and median
  of 3), and the memory the loaded catalog holds (tracemalloc, in a separate run);
- optimizer: p50/p99 of ``rank`` over the whole catalog for a mix of GPU, CPU-only, spot,
  pinned, any_of and infeasible requests, with explanations (the ``sky launch --dryrun``
  path) and without (the allocation path);
- placements/s: 1,000 registered nodes, 10,000 queued tasks placed through
  ``Broker.allocate`` in batches (default 500), store writes included.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

from styx.broker.catalog import Catalog, load_skypilot_dir  # noqa: E402 - after the path setup
from styx.broker.core import Broker  # noqa: E402
from styx.broker.optimizer import rank  # noqa: E402
from styx.common.offers import Offer  # noqa: E402
from styx.common.placement import Ask  # noqa: E402
from styx.common.resources import Accelerator, Capacity, GpuDevice, Resources  # noqa: E402
from styx.common.store import make_engine  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _load(root: Path) -> Catalog:
    by_provider, _ = load_skypilot_dir(root)
    return Catalog([o for offers in by_provider.values() for o in offers])


def bench_catalog(root: Path) -> Catalog:
    times = []
    catalog = None
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        catalog = _load(root)
        times.append(time.perf_counter() - start)
    assert catalog is not None
    del catalog
    gc.collect()
    tracemalloc.start()
    catalog = _load(root)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"catalog: {len(catalog):,} offers, {len(catalog.providers)} providers {dict(catalog.providers)}")
    print(f"catalog load + index: best {min(times) * 1e3:.0f} ms, median {statistics.median(times) * 1e3:.0f} ms")
    print(f"catalog memory (tracemalloc): held {held / 2**20:.1f} MiB, peak while loading {peak / 2**20:.1f} MiB")
    return catalog


REQUESTS = {
    "A100:8": Resources(accelerators=(Accelerator("A100", 8),)),
    "H100:8": Resources(accelerators=(Accelerator("H100", 8),)),
    "H100:8 spot": Resources(accelerators=(Accelerator("H100", 8),), use_spot=True),
    "T4:1 gcp": Resources(accelerators=(Accelerator("T4", 1),), infra="gcp"),
    "L4:1 or A10G:1": Resources(accelerators=(Accelerator("L4", 1), Accelerator("A10G", 1))),
    "V100:4 cpus 32+": Resources(cpus=32, cpus_at_least=True, accelerators=(Accelerator("V100", 4),)),
    "cpus 8+": Resources(cpus=8, cpus_at_least=True),
    "cpus 8+ mem 64+": Resources(cpus=8, cpus_at_least=True, memory_gib=64, memory_at_least=True),
    "cpus 4 exact": Resources(cpus=4),
    "cpus 2+ azure/eastus": Resources(cpus=2, cpus_at_least=True, infra="azure/eastus"),
    "cpus 16+ spot aws": Resources(cpus=16, cpus_at_least=True, use_spot=True, infra="aws"),
    "any_of H100:8|A100:8 <=40$/h": Resources(
        max_hourly_cost=40,
        any_of=(
            Resources(accelerators=(Accelerator("H100", 8),)),
            Resources(accelerators=(Accelerator("A100", 8),)),
        ),
    ),
    "A100:3 (infeasible)": Resources(accelerators=(Accelerator("A100", 3),)),
}


def bench_optimizer(catalog: Catalog, rounds: int) -> None:
    print(f"optimizer over {len(catalog):,} offers, {rounds} runs per request (ms):")
    print(f"  {'request':32s} {'p50':>7s} {'p99':>7s} {'p50 explain':>12s} {'p99 explain':>12s}  cheapest")
    all_plain: list[float] = []
    all_explain: list[float] = []
    for name, res in REQUESTS.items():
        plain, explain = [], []
        ranking = None
        for _ in range(rounds):
            start = time.perf_counter()
            rank(catalog, res, explain=False)
            plain.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            ranking = rank(catalog, res, explain=True)
            explain.append((time.perf_counter() - start) * 1e3)
        all_plain += plain
        all_explain += explain
        assert ranking is not None
        best = ranking.offers[0] if ranking.offers else None
        shown = (
            f"{best.offer.place} {best.hourly_price:.4f} $/h" if best else f"none ({len(ranking.rejections)} reasons)"
        )
        print(
            f"  {name:32s} {_pct(plain, 0.5):7.3f} {_pct(plain, 0.99):7.3f} "
            f"{_pct(explain, 0.5):12.3f} {_pct(explain, 0.99):12.3f}  {shown}"
        )
    print(
        f"  {'ALL':32s} {_pct(all_plain, 0.5):7.3f} {_pct(all_plain, 0.99):7.3f} "
        f"{_pct(all_explain, 0.5):12.3f} {_pct(all_explain, 0.99):12.3f}"
    )


class _NoProvisioning:
    """The nodes are all there: the provisioner has nothing to offer."""

    def list_offers(self) -> list[Offer]:
        return []

    def list_providers(self) -> dict[str, str]:
        return {"local": ""}

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        raise AssertionError("no provisioning in this benchmark")

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        return "done", ""


def bench_placement(db_url: str, nodes: int, tasks: int, batch: int, catalog: Catalog) -> None:
    broker = Broker(make_engine(db_url), _NoProvisioning(), lease_seconds=3600, catalog=catalog)
    rng = random.Random(7)
    for i in range(nodes):
        gpus = [GpuDevice(g, "NVIDIA A100-SXM4-80GB", 80) for g in range(8)] if i % 10 == 0 else []
        broker.register_node(f"n{i:04d}", "local", f"i-{i}", Capacity(32, 128, gpus))
    asks = []
    for i in range(tasks):
        if i % 20 == 0:
            res = Resources(cpus=4, memory_gib=16, accelerators=(Accelerator("A100", rng.choice((1, 2))),))
        else:
            res = Resources(cpus=rng.choice((0.5, 1, 2, 4)), memory_gib=rng.choice((0, 1, 4, 8)))
        asks.append(Ask(f"t{i}/1", f"t{i}", res))
    start = time.perf_counter()
    placed = 0
    for off in range(0, len(asks), batch):
        placed += sum(1 for p in broker.allocate(asks[off : off + batch]) if p.outcome == "placed")
    took = time.perf_counter() - start
    backend = db_url.split(":", 1)[0]
    print(
        f"placement ({backend}): {nodes} nodes, {tasks:,} tasks in batches of {batch}: "
        f"{placed:,} placed in {took:.2f} s = {placed / took:,.0f} placements/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogs", type=Path, default=REPO / ".." / "shared" / "catalogs")
    parser.add_argument("--rounds", type=int, default=200, help="optimizer runs per request")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--db-url", default="", help="broker store; default a temporary SQLite file")
    args = parser.parse_args()
    if (args.catalogs / "gcp" / "vms.csv").is_file():
        catalog = bench_catalog(args.catalogs.resolve())
        bench_optimizer(catalog, args.rounds)
    else:
        print(f"catalog and optimizer: skipped, no catalogs at {args.catalogs}")
        catalog = Catalog()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.db_url or f"sqlite:///{tmp}/broker.db"
        bench_placement(db_url, args.nodes, args.tasks, args.batch, catalog)


if __name__ == "__main__":
    main()
