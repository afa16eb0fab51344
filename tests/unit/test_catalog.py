"""Offer catalog: SkyPilot v8 loaders (header names, GCP accelerator attach), the built-in
catalog, the index, and checks against the real shared catalogs (skipped when absent)."""

# The CSV fixtures are verbatim SkyPilot v8 rows; their lines stay as long as the format makes them.
# ruff: noqa: E501

from __future__ import annotations

import csv
import os
from dataclasses import replace
from pathlib import Path

import pytest

from styx.broker.catalog import Catalog, builtin_offers, family_of, load_skypilot_csv, load_skypilot_dir
from styx.broker.catalog_store import validate_offer
from styx.broker.optimizer import rank
from styx.common import catalog_rules
from styx.common.errors import InvalidArgument
from styx.common.offers import Offer
from styx.common.resources import Accelerator, Resources

# Next to the repository (../shared/catalogs); STYX_SHARED_CATALOGS points elsewhere (a worktree).
SHARED = Path(
    os.environ.get("STYX_SHARED_CATALOGS") or Path(__file__).resolve().parents[2] / ".." / "shared" / "catalogs"
)

AWS_CSV = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone,Arch
p4d.24xlarge,A100,8.0,96.0,1152.0,"{'Gpus': [{'Name': 'A100', 'MemoryInfo': {'SizeInMiB': 40960}}]}",32.7726,12.5,us-east-1,use1-az1,x86_64
m6i.xlarge,,,4.0,16.0,,0.192,,us-east-1,use1-az2,x86_64
m7g.xlarge,,,4.0,16.0,,0.1632,0.06,us-east-1,use1-az2,arm64
x1.nothing,,,4.0,16.0,,,0.1,us-east-1,use1-az2,x86_64
"""

GCP_CSV = """InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice
a2-highgpu-8g,96.0,680.0,,,,us-central1,us-central1-a,5.91582,2.958
n1-standard-8,8.0,30.0,,,,us-central1,us-central1-a,0.38,0.12059
n1-standard-64,64.0,240.0,,,,us-central1,us-central1-a,3.04,0.9647
n2-standard-8,8.0,32.0,,,,us-central1,us-central1-a,0.3885,0.094
,,,A100,8,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 40960}}]},us-central1,us-central1-a,23.47126,11.4728
,,,T4,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 16384}}]},us-central1,us-central1-a,0.35,0.1579
,,,T4,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 16384}}]},us-east1,us-east1-b,0.35,0.1579
,,,tpu-v4-8,1,,us-central1,us-central1-a,12.88,3.86
"""

AZURE_CSV = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,Generation
Standard_D4s_v5,,,4,16,,0.192,0.0384,eastus,"V1,V2"
Standard_NC6s_v3,V100,1,6,112,V100,3.06,0.612,eastus,"V1,V2"
Standard_NV6ads_A10_v5,A10,0.167,6,55,A10,0.454,0.09,eastus,V2
"""


def _write(tmp_path: Path, provider: str, text: str) -> Path:
    path = tmp_path / provider / "vms.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_aws_rows_are_read_by_header_name(tmp_path):
    offers, stats = load_skypilot_csv("aws", _write(tmp_path, "aws", AWS_CSV))
    by_type = {o.instance_type: o for o in offers}
    p4d = by_type["p4d.24xlarge"]
    assert (p4d.cpus, p4d.memory_gib, p4d.accelerator_name, p4d.accelerator_count) == (96, 1152, "A100", 8)
    assert p4d.accelerator_memory_gib == 40 and p4d.zone == "use1-az1"  # zone ids stay as written
    assert (p4d.price_per_hour, p4d.spot_price_per_hour) == (32.7726, 12.5)
    assert by_type["m6i.xlarge"].spot_price_per_hour == 0  # no spot market
    assert by_type["m7g.xlarge"].arch == "arm64"
    assert "x1.nothing" not in by_type and stats.skipped == {"no on-demand price": 1}


def test_gcp_accelerator_rows_attach_to_their_host_family(tmp_path):
    offers, stats = load_skypilot_csv("gcp", _write(tmp_path, "gcp", GCP_CSV))
    gpu = [o for o in offers if o.accelerator_count]
    a100 = [o for o in gpu if o.accelerator_name == "A100"]
    assert [(o.instance_type, o.accelerator_count) for o in a100] == [("a2-highgpu-8g", 8)]
    assert a100[0].price_per_hour == pytest.approx(5.91582 + 23.47126)
    assert a100[0].spot_price_per_hour == pytest.approx(2.958 + 11.4728)
    assert a100[0].accelerator_memory_gib == 40
    # T4:1 goes on N1 hosts up to 48 vCPUs, in the accelerator's zone only.
    t4 = sorted(o.instance_type for o in gpu if o.accelerator_name == "T4")
    assert t4 == ["n1-standard-8"]
    # The a2 host is never offered without its GPUs; n1/n2 stay as CPU offers; TPUs are skipped.
    cpu = sorted(o.instance_type for o in offers if not o.accelerator_count)
    assert cpu == ["n1-standard-64", "n1-standard-8", "n2-standard-8"]
    assert stats.skipped == {"TPU (not supported)": 1, "accelerator without a host VM in its zone": 1}


def test_azure_has_no_zones_and_fractional_gpus_are_skipped(tmp_path):
    offers, stats = load_skypilot_csv("azure", _write(tmp_path, "azure", AZURE_CSV))
    assert {o.instance_type for o in offers} == {"Standard_D4s_v5", "Standard_NC6s_v3"}
    assert all(o.zone == "" and o.region == "eastus" for o in offers)
    assert stats.skipped == {"fractional GPU": 1}


def test_load_dir_and_bad_files(tmp_path):
    _write(tmp_path, "aws", AWS_CSV)
    _write(tmp_path, "azure", AZURE_CSV)
    by_provider, stats = load_skypilot_dir(tmp_path)
    assert sorted(by_provider) == ["aws", "azure"] and stats.offers == 5
    _write(tmp_path, "bad", "Name,Cost\nx,1\n")
    with pytest.raises(InvalidArgument, match="missing columns"):
        load_skypilot_dir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgument, match=r"no <provider>/vms\.csv"):
        load_skypilot_dir(tmp_path / "empty")


def test_family_names():
    assert family_of("p4d.24xlarge") == "p4d"
    assert family_of("n2-standard-8") == "n2-standard"
    assert family_of("Standard_NC24ads_A100_v4") == "Standard_NCads_A100_v4"
    assert family_of("host") == "host"


def test_builtin_catalog_covers_the_three_clouds():
    offers = builtin_offers()
    cat = Catalog(offers)
    assert set(cat.providers) == {"aws", "gcp", "azure"}
    for provider in ("aws", "gcp", "azure"):
        for accel in ("A100", "H100", "T4"):
            assert cat.shapes(provider, "", accel), (provider, accel)
        assert cat.shapes(provider, "", ""), provider  # CPU instance types
    assert all(o.price_per_hour > 0 and 0 < o.spot_price_per_hour < o.price_per_hour for o in offers)
    assert all(o.cpus > 0 and o.memory_gib > 0 for o in offers)
    best = rank(cat, Resources(accelerators=(Accelerator("A100", 8),))).offers[0]
    assert best.offer.accelerator_count == 8 and best.offer.accelerator_name == "A100"


def test_catalog_replace_provider_and_index_order():
    a = Offer("aws", "us-east-1", "us-east-1b", "m.x", 4, 16, price_per_hour=0.2, spot_price_per_hour=0.05)
    b = Offer("aws", "us-east-1", "us-east-1a", "m.x", 4, 16, price_per_hour=0.2)
    c = Offer("gcp", "us-central1", "us-central1-a", "n.x", 4, 16, price_per_hour=0.1)
    cat = Catalog([a, b, c])
    (shape,) = cat.shapes("aws", "", "")
    assert shape.ondemand == [b, a] and shape.spot == [a]  # ties by zone; no spot market left out
    assert cat.shapes("aws", "us-east-1", "") and not cat.shapes("aws", "eu-west-1", "")
    replaced = cat.with_provider("aws", [a])
    assert replaced.providers == {"aws": 1, "gcp": 1} and len(cat) == 3


# ---- the real shared catalogs ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> tuple[list[Offer], Catalog]:
    if not (SHARED / "gcp" / "vms.csv").is_file():
        pytest.skip(f"shared catalogs not present at {SHARED}")
    by_provider, _ = load_skypilot_dir(SHARED)
    offers = [o for v in by_provider.values() for o in v]
    return offers, Catalog(offers)


def test_shared_gcp_attach_rule_with_a_real_row(shared):
    offers, _ = shared
    rows = list(csv.DictReader((SHARED / "gcp" / "vms.csv").open()))
    accel = next(
        r
        for r in rows
        if not r["InstanceType"] and r["AcceleratorName"] == "A100" and r["AcceleratorCount"] == "8" and r["Price"]
    )
    host = next(
        r for r in rows if r["InstanceType"] == "a2-highgpu-8g" and r["AvailabilityZone"] == accel["AvailabilityZone"]
    )
    (offer,) = [
        o
        for o in offers
        if o.provider == "gcp"
        and o.zone == accel["AvailabilityZone"]
        and o.instance_type == "a2-highgpu-8g"
        and o.accelerator_name == "A100"
    ]
    assert offer.accelerator_count == 8
    assert offer.cpus == float(host["vCPUs"]) and offer.memory_gib == float(host["MemoryGiB"])
    assert offer.price_per_hour == pytest.approx(float(host["Price"]) + float(accel["Price"]))
    # price = host + count x per-GPU price: the accelerator row is 8x the 1-GPU row.
    one = next(
        r
        for r in rows
        if not r["InstanceType"]
        and r["AcceleratorName"] == "A100"
        and r["AcceleratorCount"] == "1"
        and r["AvailabilityZone"] == accel["AvailabilityZone"]
    )
    assert float(accel["Price"]) == pytest.approx(8 * float(one["Price"]), rel=1e-4)


def _x86(o: Offer) -> bool:
    return o.arch == "x86_64"


def _cpu_default(o: Offer) -> bool:
    """What a CPU-only request accepts by default: x86_64 general-purpose families."""
    return _x86(o) and not o.accelerator_count and catalog_rules.is_general(o.provider, o.instance_type)


def _brute_force(offers: list[Offer], keep) -> Offer:
    feasible = [o for o in offers if keep(o)]
    return min(feasible, key=lambda o: (o.price_per_hour, o.provider, o.region, o.zone, o.instance_type))


@pytest.mark.parametrize(
    ("request_", "keep"),
    [
        (
            Resources(accelerators=(Accelerator("A100", 8),)),
            lambda o: _x86(o) and o.accelerator_name.upper() == "A100" and o.accelerator_count == 8,
        ),
        (
            Resources(accelerators=(Accelerator("H100", 8),)),
            lambda o: _x86(o) and o.accelerator_name.upper() == "H100" and o.accelerator_count == 8,
        ),
        (Resources(cpus=8, cpus_at_least=True), lambda o: _cpu_default(o) and o.cpus >= 8),
        (
            Resources(cpus=8, cpus_at_least=True, memory_gib=64, memory_at_least=True, infra="gcp"),
            lambda o: o.provider == "gcp" and _cpu_default(o) and o.cpus >= 8 and o.memory_gib >= 64,
        ),
    ],
    ids=["A100:8", "H100:8", "cpus 8+", "gcp cpus 8+ memory 64+"],
)
def test_shared_cheapest_matches_brute_force(shared, request_, keep):
    offers, cat = shared
    expected = _brute_force(offers, keep)
    got = rank(cat, request_, limit=3).offers
    assert got[0].offer == expected
    assert [r.hourly_price for r in got] == sorted(r.hourly_price for r in got)


def test_shared_spot_cheapest_matches_brute_force(shared):
    offers, cat = shared
    feasible = [
        o
        for o in offers
        if _x86(o) and o.accelerator_name == "H100" and o.accelerator_count == 8 and o.spot_price_per_hour
    ]
    expected = min(feasible, key=lambda o: (o.spot_price_per_hour, o.provider, o.region, o.zone, o.instance_type))
    got = rank(cat, Resources(accelerators=(Accelerator("H100", 8),), use_spot=True), limit=1).offers
    assert got[0].offer == expected and got[0].spot and got[0].hourly_price == expected.spot_price_per_hour


# ---- rows that cannot be offers ----------------------------------------------------------------

BAD_AWS_CSV = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone
m6i.xlarge,,,4.0,16.0,,0.192,0.07,us-east-1,use1-az1
m6i.free,,,4.0,16.0,,0,,us-east-1,use1-az1
m6i.refund,,,4.0,16.0,,-0.5,,us-east-1,use1-az1
m6i.text,,,4.0,16.0,,cheap,,us-east-1,use1-az1
m6i.inf,,,4.0,16.0,,inf,,us-east-1,use1-az1
m6i.badspot,,,4.0,16.0,,0.192,-0.1,us-east-1,use1-az1
m6i.nocpu,,,,16.0,,0.192,,us-east-1,use1-az1
m6i.zerocpu,,,0,16.0,,0.192,,us-east-1,use1-az1
m6i.nomem,,,4.0,,,0.192,,us-east-1,use1-az1
m6i.negmem,,,4.0,-16,,0.192,,us-east-1,use1-az1
p4d.nogpus,A100,,96.0,1152.0,,32.77,,us-east-1,use1-az1
p4d.zerogpus,A100,0,96.0,1152.0,,32.77,,us-east-1,use1-az1
,,,4.0,16.0,,0.192,,us-east-1,use1-az1
m7g.xlarge,,,4.0,16.0,,0.1632,,us-east-1,use1-az1
"""

BAD_GCP_CSV = """InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice
n1-standard-8,8.0,30.0,,,,us-central1,us-central1-a,0.38,0.12059
n1-standard-4,4.0,0,,,,us-central1,us-central1-a,0.19,0.06
,,,T4,1,,us-central1,us-central1-a,0,0.1579
,,,T4,-2,,us-central1,us-central1-a,0.7,0.3
,,,T4,2,,us-central1,us-central1-a,0.7,-0.3
,,,T4,4,,us-central1,us-central1-a,1.4,0.6
"""


def test_import_drops_rows_with_missing_zero_or_negative_numbers_and_says_why(tmp_path):
    # Regression: a price of 0 or below, or a missing/zero vCPU or memory count, became an offer.
    offers, stats = load_skypilot_csv("aws", _write(tmp_path, "aws", BAD_AWS_CSV))
    assert sorted(o.instance_type for o in offers) == ["m6i.xlarge", "m7g.xlarge"]
    assert stats.skipped == {
        "zero or negative on-demand price": 2,
        "on-demand price not a number": 2,
        "negative spot price": 1,
        "no vCPUs": 1,
        "zero or negative vCPUs": 1,
        "no memory": 1,
        "zero or negative memory": 1,
        "no accelerator count": 1,
        "zero or negative accelerator count": 1,
        "no instance type": 1,
    }
    # No Arch column: the family says m7g is Graviton (it used to read as x86_64).
    assert {o.instance_type: o.arch for o in offers} == {"m6i.xlarge": "x86_64", "m7g.xlarge": "arm64"}


def test_gcp_accelerator_rows_are_checked_too(tmp_path):
    offers, stats = load_skypilot_csv("gcp", _write(tmp_path, "gcp", BAD_GCP_CSV))
    assert [(o.instance_type, o.accelerator_name, o.accelerator_count) for o in offers] == [
        ("n1-standard-8", "", 0),
        ("n1-standard-8", "T4", 4),
    ]
    assert stats.skipped == {
        "zero or negative memory": 1,
        "zero or negative on-demand price": 1,
        "zero or negative accelerator count": 1,
        "negative spot price": 1,
    }


def test_shared_cpu_only_requests_get_x86_general_purpose_picks(shared):
    """The real catalog (placeholder $0.01 Azure L-series, Graviton/Axion/Cobalt sizes) gives
    x86 general-purpose picks for CPU-only requests, per provider and overall."""
    _, cat = shared
    requests = [
        Resources(cpus=2, cpus_at_least=True),
        Resources(cpus=8),
        Resources(cpus=8, memory_gib=32),
        Resources(cpus=64, cpus_at_least=True),
        Resources(cpus=96, cpus_at_least=True, memory_gib=384, memory_at_least=True),
    ]
    for res in requests:
        for infra in ("", "aws", "gcp", "azure"):
            got = rank(cat, Resources(**{**res.__dict__, "infra": infra}), limit=20).offers
            assert got, (res, infra)
            for ranked in got:
                offer = ranked.offer
                assert offer.arch == "x86_64", (res, infra, offer.place)
                assert catalog_rules.category(offer.provider, offer.instance_type) in (
                    catalog_rules.GENERAL,
                    catalog_rules.COMPUTE,
                    catalog_rules.MEMORY,
                ), (res, infra, offer.place)
    # And the traps are there: without the defaults these requests would have taken them.
    arm = rank(cat, Resources(cpus=64, cpus_at_least=True, arch="arm64"), limit=5).offers
    assert arm and all(r.offer.arch == "arm64" for r in arm)
    storage = rank(cat, Resources(cpus=8, instance_type="Standard_L8s_v3"), limit=1).offers
    assert storage and storage[0].hourly_price < rank(cat, Resources(cpus=8), limit=1).offers[0].hourly_price


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"price_per_hour": 0.0}, "price_per_hour"),
        ({"price_per_hour": -1.0}, "price_per_hour"),
        ({"price_per_hour": float("nan")}, "price_per_hour"),
        ({"memory_gib": 0.0}, "memory_gib"),
        ({"cpus": -4.0}, "cpus"),
        ({"spot_price_per_hour": -0.1}, "spot_price_per_hour"),
        ({"accelerator_name": "A100", "accelerator_count": -8}, "accelerator_count"),
    ],
)
def test_imported_offers_with_missing_zero_or_negative_numbers_are_refused(changes, field):
    good = Offer("aws", "us-east-1", "us-east-1a", "m6i.xlarge", 4, 16, price_per_hour=0.192)
    assert validate_offer(good, 0) is good
    with pytest.raises(InvalidArgument, match=rf"^offers\[3\]\.{field}: must be"):
        validate_offer(replace(good, **changes), 3)
