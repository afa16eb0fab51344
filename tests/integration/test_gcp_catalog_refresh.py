"""sky catalog refresh gcp: the provisioner's gcp plugin runs the REAL google-cloud-compute
SDK (MachineTypesClient / AcceleratorTypesClient aggregated_list) against
tests/fakes/gcp_compute.py, a local FAKE speaking the documented Compute Engine REST wire
format (no runnable Compute Engine exists outside Google; reached through
STYX_GCP_COMPUTE_ENDPOINT with anonymous credentials), and the CLI imports the offers into
the broker's catalog.

The fake lists a handful of machine types (e2/n2/n1/n2d, a2-highgpu-1g, g2-standard-4) in
two zones of each of us-central1 and europe-west4, T4/V100 accelerator types for N1, and
pages its answers (``page_size``) so the SDK's pagers follow ``nextPageToken``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from fakes.gcp_compute import MACHINE_TYPES, FakeCompute
from helpers import run_sky
from styx_plugins.gcp.catalog import PriceBook, build_catalog
from styx_plugins.gcp.config import GcpSettings
from styx_plugins.gcp.provider import GcpProvider

pytest.importorskip("google.cloud.compute_v1")

PROJECT = "styx-catalog"
# Priced by the built-in catalog, per zone of the fake: e2-standard-2/-4, n2-standard-4,
# n1-standard-4/-8 in all 4 zones (20); a2-highgpu-1g in 3 zones; g2-standard-4 in 2; N1 GPU
# variants: n1-standard-4 + T4 and n1-standard-8 + T4 in all 4 zones, n1-standard-8 + V100
# in us-central1-a only (9). e2-micro and n2d-standard-2 (4 zones each) are not priced.
PRICED = 34
UNPRICED = {"e2-micro", "n2d-standard-2"}


@pytest.fixture()
def fake() -> Iterator[FakeCompute]:
    """A fake Compute Engine answering in small pages (to exercise nextPageToken)."""
    compute = FakeCompute(page_size=4).start()
    try:
        yield compute
    finally:
        compute.stop()


def _env(fake: FakeCompute) -> dict[str, str]:
    return {"STYX_GCP_PROJECT": PROJECT, "STYX_GCP_COMPUTE_ENDPOINT": fake.endpoint, "STYX_GCP_ANONYMOUS": "1"}


def _provider(fake: FakeCompute) -> GcpProvider:
    return GcpProvider(settings=GcpSettings.from_env(_env(fake)))


def test_refresh_imports_the_clouds_catalog(tmp_path: Path, fake: FakeCompute) -> None:
    """refresh exits 0, list shows gcp imported with the fake's offers and regions, and a
    dry-run launch picks a machine type the fake listed."""
    env = _env(fake)
    home = tmp_path / "home"
    try:
        refreshed = run_sky(["catalog", "refresh", "gcp"], home, **env)
        assert refreshed.returncode == 0, refreshed.stderr
        assert "gcp" in refreshed.stdout and f"{PRICED}" in refreshed.stdout
        assert fake.catalog_calls > 2  # more than one page of each list was fetched
        listed = run_sky(["catalog", "list", "--json"], home, **env)
        assert listed.returncode == 0, listed.stderr
        gcp = next(c for c in json.loads(listed.stdout) if c["provider"] == "gcp")
        assert gcp["source"] == "imported" and gcp["offers"] == PRICED and gcp["regions"] == 2
        dry = run_sky(["launch", "--dryrun", "--infra", "gcp", "--cpus", "4", "--", "true"], home, **env)
        assert dry.returncode == 0, dry.stderr
        listed_types = {spec[0] for specs in MACHINE_TYPES.values() for spec in specs} - UNPRICED
        assert any(t in dry.stdout for t in listed_types), dry.stdout
        assert "e2-standard-4" in dry.stdout  # the cheapest listed type with 4 vCPUs
    finally:
        run_sky(["local", "down"], home, **env)


def test_unpriced_types_are_left_out_by_default(fake: FakeCompute) -> None:
    """Types the built-in catalog cannot price are dropped unless include_unpriced (price 0)."""
    provider = _provider(fake)
    offers = provider.catalog()
    assert len(offers) == PRICED
    assert not {o.instance_type for o in offers} & UNPRICED
    assert all(o.price_per_hour > 0 and o.provider == "gcp" for o in offers)
    everything = provider.catalog(include_unpriced=True)
    unpriced = [o for o in everything if o.instance_type in UNPRICED]
    assert len(unpriced) == 8 and all(o.price_per_hour == 0 for o in unpriced)
    micro = next(o for o in unpriced if o.instance_type == "e2-micro")
    assert (micro.cpus, micro.memory_gib) == (2.0, 1.0)


def test_mapping_and_prices(fake: FakeCompute) -> None:
    """Bundled GPUs, N1 GPU variants, regional prices and the region filter."""
    offers = _provider(fake).catalog(["europe-west4"])
    assert {o.region for o in offers} == {"europe-west4"}
    by = {(o.zone, o.instance_type, o.accelerator_name): o for o in offers}
    a2 = by[("europe-west4-a", "a2-highgpu-1g", "A100")]
    assert (a2.cpus, a2.memory_gib, a2.accelerator_count, a2.accelerator_memory_gib) == (12.0, 85.0, 1, 40.0)
    assert a2.price_per_hour == pytest.approx(3.6734 * 1.1, abs=1e-4)  # europe-west4 price factor (rounded to 4 places)
    g2 = by[("europe-west4-b", "g2-standard-4", "L4")]
    assert g2.accelerator_count == 1 and g2.accelerator_memory_gib == 24.0
    t4 = by[("europe-west4-a", "n1-standard-4", "T4")]
    assert (t4.cpus, t4.memory_gib, t4.accelerator_count) == (4.0, 15.0, 1)
    assert ("europe-west4-a", "n1-standard-8", "V100") not in by  # no V100 in that zone


def test_unknown_region_takes_the_cheapest_known_price() -> None:
    """A region the built-in catalog lacks gets the type's cheapest known price (x 1.0)."""
    mt = SimpleNamespace(
        name="e2-standard-4", guest_cpus=4, memory_mb=16384, accelerators=[], zone="me-west1-a",
        architecture="X86_64", deprecated=None,
    )  # fmt: skip
    offers = build_catalog([("zones/me-west1-a", SimpleNamespace(machine_types=[mt]))], [], prices=PriceBook.builtin())
    assert [(o.region, o.price_per_hour, o.spot_price_per_hour) for o in offers] == [("me-west1", 0.134, 0.0402)]
