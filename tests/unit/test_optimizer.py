"""Optimizer: ranking cheapest first under the request's constraints, and the reasons."""

from __future__ import annotations

from dataclasses import replace

import pytest

from styx.broker.catalog import Catalog
from styx.broker.optimizer import rank
from styx.common.errors import InvalidArgument
from styx.common.offers import Offer
from styx.common.resources import Accelerator, Resources


def mk(provider, region, zone, itype, cpus, mem, acc="", n=0, price=1.0, spot=0.0):
    return Offer(provider, region, zone, itype, cpus, mem, acc, n, 0, price, spot)


OFFERS = [
    mk("aws", "us-east-1", "us-east-1a", "m6i.xlarge", 4, 16, price=0.192, spot=0.07),
    mk("aws", "us-east-1", "us-east-1b", "m6i.xlarge", 4, 16, price=0.192, spot=0.08),
    mk("aws", "us-east-1", "us-east-1a", "m6i.2xlarge", 8, 32, price=0.384, spot=0.14),
    mk("aws", "us-east-1", "us-east-1a", "r6i.2xlarge", 8, 64, price=0.504),
    mk("aws", "us-east-1", "us-east-1a", "p4d.24xlarge", 96, 1152, "A100", 8, price=32.77, spot=12.5),
    mk("aws", "us-west-2", "us-west-2a", "p4d.24xlarge", 96, 1152, "A100", 8, price=32.77, spot=11.0),
    mk("aws", "us-east-1", "us-east-1a", "p5.48xlarge", 192, 2048, "H100", 8, price=98.32, spot=35.0),
    mk("aws", "us-east-1", "us-east-1a", "g5.xlarge", 4, 16, "A10G", 1, price=1.006, spot=0.42),
    mk("gcp", "us-central1", "us-central1-a", "n2-standard-4", 4, 16, price=0.1942, spot=0.047),
    mk("gcp", "us-central1", "us-central1-a", "n2-standard-8", 8, 32, price=0.3885, spot=0.094),
    mk("gcp", "us-central1", "us-central1-a", "a2-highgpu-8g", 96, 680, "A100", 8, price=29.39, spot=8.8),
    mk("gcp", "us-central1", "us-central1-a", "a2-highgpu-1g", 12, 85, "A100", 1, price=3.67, spot=1.1),
    mk("gcp", "us-central1", "us-central1-a", "n1-standard-8", 8, 30, "T4", 1, price=0.73, spot=0.24),
    mk("azure", "eastus", "", "Standard_D4s_v5", 4, 16, price=0.192, spot=0.0384),
    mk("azure", "eastus", "", "Standard_ND96isr_H100_v5", 96, 1900, "H100", 8, price=98.32),
]
CAT = Catalog(OFFERS)


def top(res: Resources, **kw) -> list[tuple[str, str, str]]:
    return [(r.offer.provider, r.offer.zone, r.offer.instance_type) for r in rank(CAT, res, **kw).offers]


def reasons(res: Resources, **kw) -> dict[str, str]:
    return {r.family: r.reason for r in rank(CAT, res, **kw).rejections}


def test_gpu_request_picks_the_cheapest_exact_count():
    res = Resources(accelerators=(Accelerator("a100", 8),))
    assert top(res) == [
        ("gcp", "us-central1-a", "a2-highgpu-8g"),
        ("aws", "us-east-1a", "p4d.24xlarge"),
        ("aws", "us-west-2a", "p4d.24xlarge"),
    ]
    # A100:1 never gets an 8-GPU instance: counts match exactly for new instances.
    assert top(Resources(accelerators=(Accelerator("A100", 1),))) == [("gcp", "us-central1-a", "a2-highgpu-1g")]
    assert reasons(Resources(accelerators=(Accelerator("A100", 4),)))["aws p4d"] == (
        "8x A100 per instance, request wants A100:4"
    )


def test_accelerator_alternatives_and_names():
    res = Resources(accelerators=(Accelerator("H100", 8), Accelerator("A100", 8)))
    assert top(res, limit=1) == [("gcp", "us-central1-a", "a2-highgpu-8g")]
    assert top(Resources(accelerators=(Accelerator("A10", 1),))) == []  # A10 is not A10G
    why = reasons(Resources(accelerators=(Accelerator("H200", 8),)))
    assert why["aws"].startswith("no H200 offers; accelerators here: A100, A10G, H100")


def test_cpu_only_requests_use_cpu_types_exact_or_at_least():
    exact = top(Resources(cpus=4))
    assert exact == [
        ("aws", "us-east-1a", "m6i.xlarge"),
        ("aws", "us-east-1b", "m6i.xlarge"),
        ("azure", "", "Standard_D4s_v5"),
        ("gcp", "us-central1-a", "n2-standard-4"),
    ]  # equal prices in provider/region/zone order; g5.xlarge (4 CPUs + GPU) is not used
    at_least = top(Resources(cpus=8, cpus_at_least=True))
    assert at_least[:2] == [("aws", "us-east-1a", "m6i.2xlarge"), ("gcp", "us-central1-a", "n2-standard-8")]
    assert top(Resources(cpus=8, cpus_at_least=True, memory_gib=64, memory_at_least=True)) == [
        ("aws", "us-east-1a", "r6i.2xlarge")
    ]
    assert top(Resources(cpus=8, memory_gib=32), limit=1) == [("aws", "us-east-1a", "m6i.2xlarge")]
    # The scheduler's default (0.5 CPU, no memory) means "any size": the cheapest CPU offer.
    assert top(Resources(), limit=1) == [("aws", "us-east-1a", "m6i.xlarge")]
    why = reasons(Resources(cpus=6))
    assert why["aws m6i"] == "4, 8 vCPUs, request wants exactly 6"


def test_spot_ranks_by_spot_price_and_needs_a_spot_market():
    res = Resources(accelerators=(Accelerator("A100", 8),), use_spot=True)
    ranked = rank(CAT, res).offers
    assert [(r.offer.provider, r.offer.region, r.hourly_price, r.spot) for r in ranked] == [
        ("gcp", "us-central1", 8.8, True),
        ("aws", "us-west-2", 11.0, True),
        ("aws", "us-east-1", 12.5, True),
    ]
    h100 = Resources(accelerators=(Accelerator("H100", 8),), use_spot=True)
    assert top(h100) == [("aws", "us-east-1a", "p5.48xlarge")]
    assert reasons(h100)["azure Standard_NDisr_H100_v5"] == "no spot market"


def test_provider_region_zone_and_instance_type_pins():
    a100 = (Accelerator("A100", 8),)
    assert top(Resources(accelerators=a100, infra="aws")) == [
        ("aws", "us-east-1a", "p4d.24xlarge"),
        ("aws", "us-west-2a", "p4d.24xlarge"),
    ]
    assert top(Resources(accelerators=a100, infra="aws/us-west-2")) == [("aws", "us-west-2a", "p4d.24xlarge")]
    assert top(Resources(cpus=4, infra="aws/us-east-1/us-east-1b")) == [("aws", "us-east-1b", "m6i.xlarge")]
    why = reasons(Resources(accelerators=a100, infra="aws/eu-west-1"))
    assert why["gcp"] == "excluded by infra aws/eu-west-1" and why["aws p4d"] == "not offered in region eu-west-1"
    assert top(Resources(instance_type="r6i.2xlarge")) == [("aws", "us-east-1a", "r6i.2xlarge")]
    assert reasons(Resources(instance_type="z9.huge"))["*"] == "no offer has instance type z9.huge"
    with pytest.raises(InvalidArgument, match="infra"):
        rank(CAT, Resources(infra="a/b/c/d"))


def test_max_hourly_cost_counts_every_node():
    res = Resources(accelerators=(Accelerator("A100", 8),), max_hourly_cost=60)
    assert len(rank(CAT, res).offers) == 3
    two = rank(CAT, res, num_nodes=2)
    assert [(r.offer.instance_type, r.total_hourly_price) for r in two.offers] == [("a2-highgpu-8g", 58.78)]
    assert {r.family: r.reason for r in two.rejections}["aws p4d"] == (
        "cheapest 32.77 $/h x 2 nodes, over max_hourly_cost 60.00 $/h"
    )
    assert rank(CAT, Resources(accelerators=(Accelerator("A100", 8),)), max_hourly_cost=10).offers == []


def test_any_of_takes_the_cheapest_and_ordered_the_first_feasible():
    h100 = Resources(accelerators=(Accelerator("H100", 8),))
    t4 = Resources(accelerators=(Accelerator("T4", 1),))
    any_of = rank(CAT, Resources(any_of=(h100, t4)), limit=2).offers
    assert [(r.offer.instance_type, r.alternative) for r in any_of] == [
        ("n1-standard-8", 1),
        ("p5.48xlarge", 0),
    ]
    nothing = Resources(accelerators=(Accelerator("B200", 8),))
    ordered = rank(CAT, Resources(ordered=(nothing, h100, t4))).offers
    assert {r.offer.accelerator_name for r in ordered} == {"H100"} and {r.alternative for r in ordered} == {1}
    # Alternatives inherit the enclosing infra and spot market.
    pinned = rank(CAT, Resources(infra="aws", use_spot=True, any_of=(h100, t4))).offers
    assert [(r.offer.instance_type, r.spot) for r in pinned] == [("p5.48xlarge", True)]


def test_disabled_providers_are_excluded_with_the_reason():
    res = Resources(accelerators=(Accelerator("A100", 8),))
    enabled = {"aws": "", "gcp": "no credentials; run gcloud auth application-default login"}
    ranking = rank(CAT, res, enabled=enabled)
    assert {r.offer.provider for r in ranking.offers} == {"aws"}
    why = {r.family: r.reason for r in ranking.rejections}
    assert why["gcp"].startswith("provider disabled (no credentials")
    assert why["azure"] == "provider disabled (no provider plugin loaded by the provisioner)"
    what_if = rank(CAT, res, enabled=enabled, include_disabled=True).offers
    assert [(r.offer.provider, r.enabled) for r in what_if][:2] == [("gcp", False), ("aws", True)]


def test_host_offers_are_slices_matched_at_least():
    host = Offer("local", "local", "", "host", 16, 64, "NVIDIA A100-SXM4-80GB", 4, 80, 0.0, 0.0, max_instances=1)
    res = Resources(cpus=4, accelerators=(Accelerator("A100", 2),))
    ranked = rank(CAT, res, host_offers=[host]).offers
    assert ranked[0].offer == host and ranked[0].hourly_price == 0
    assert rank(CAT, Resources(cpus=32), host_offers=[host], enabled={"local": ""}).offers == []
    why = {r.family: r.reason for r in rank(CAT, Resources(cpus=32), host_offers=[host]).rejections}
    assert why["local/local host"] == "has 16 CPUs, 64.0 GiB, 4x NVIDIA A100-SXM4-80GB"


def test_ties_are_deterministic_whatever_the_input_order():
    shuffled = Catalog(list(reversed(OFFERS)))
    res = Resources(cpus=4)
    assert [r.offer for r in rank(shuffled, res).offers] == [r.offer for r in rank(CAT, res).offers]


def test_limit_and_rejection_cap():
    assert len(rank(CAT, Resources(cpus=1, cpus_at_least=True), limit=2).offers) == 2
    many = Catalog([mk("aws", "r", "", f"f{i}.x", 2, 4, price=1) for i in range(50)])
    rejections = rank(many, Resources(cpus=3)).rejections
    assert len(rejections) == 31 and rejections[-1] == rejections[-1].__class__("...", "and 20 more families")


# ---- defaults: x86_64 and general-purpose families for CPU-only requests -------------------

# Storage-optimized and ARM sizes priced far below their general-purpose x86 peers, as in
# catalogs with placeholder prices: the defaults must not fall for them.
CHEAP_TRAPS = [
    mk("aws", "us-east-1", "us-east-1a", "m6i.2xlarge", 8, 32, price=0.384),
    mk("aws", "us-east-1", "us-east-1a", "i4i.2xlarge", 8, 64, price=0.01),
    mk("aws", "us-east-1", "us-east-1a", "d3.2xlarge", 8, 64, price=0.02),
    mk("aws", "us-east-1", "us-east-1a", "m6i.16xlarge", 64, 256, price=3.07),
    # The arch column said nothing (x86_64 was filled in): the family says Graviton.
    mk("aws", "us-east-1", "us-east-1a", "m7g.16xlarge", 64, 256, price=2.61),
    mk("aws", "us-east-1", "us-east-1a", "c7g.16xlarge", 64, 128, price=2.32),
    mk("aws", "us-east-1", "us-east-1a", "r8g.16xlarge", 64, 512, price=2.0),
    mk("gcp", "us-central1", "us-central1-a", "n2-standard-8", 8, 32, price=0.3885),
    mk("gcp", "us-central1", "us-central1-a", "z3-highmem-8", 8, 64, price=0.05),
    mk("gcp", "us-central1", "us-central1-a", "t2a-standard-8", 8, 32, price=0.08),
    mk("gcp", "us-central1", "us-central1-a", "c4a-standard-64", 64, 256, price=0.5),
    mk("azure", "eastus", "", "Standard_D8s_v5", 8, 32, price=0.384),
    mk("azure", "eastus", "", "Standard_L8s_v3", 8, 64, price=0.01),
    mk("azure", "eastus", "", "Standard_D64ps_v5", 64, 208, price=0.2),
]
TRAPS = Catalog(CHEAP_TRAPS)


def picks(res: Resources, **kw) -> list[str]:
    return [r.offer.instance_type for r in rank(TRAPS, res, **kw).offers]


def test_cpu_only_request_never_gets_a_storage_optimized_size():
    # Regression: cpus: 8 was given i4i.2xlarge / Standard_L8s_v3 at $0.01/h.
    assert picks(Resources(cpus=8)) == ["m6i.2xlarge", "Standard_D8s_v5", "n2-standard-8"]
    why = {r.family: r.reason for r in rank(TRAPS, Resources(cpus=8)).rejections}
    # Each is cheaper than the chosen m6i.2xlarge, so the dryrun says the default passed it over.
    assert why["aws i4i"].startswith("skipped by default: storage-optimized family; CPU-only requests use general")
    assert "instance_type names one" in why["azure Standard_Ls_v3"]
    assert why["gcp z3-highmem"].startswith("skipped by default: storage-optimized family")
    assert why["gcp t2a-standard"] == (
        "skipped by default: arm64 instances, request wants x86_64 (the default; set arch: arm64 to use ARM)"
    )
    # Naming the type lifts the default.
    assert picks(Resources(cpus=8, instance_type="i4i.2xlarge")) == ["i4i.2xlarge"]
    # GPU requests are not CPU-only: the default is about CPU-only requests.
    assert [r.offer.instance_type for r in rank(CAT, Resources(accelerators=(Accelerator("T4", 1),))).offers] == [
        "n1-standard-8"
    ]


def test_large_cpu_request_gets_x86_unless_arm_is_asked_for():
    # Regression: cpus: 64+ got a Graviton / Axion / Cobalt size, where x86 binaries do not run.
    big = Resources(cpus=64, cpus_at_least=True)
    assert picks(big) == ["m6i.16xlarge"]
    why = {r.family: r.reason for r in rank(TRAPS, big).rejections}
    default = "arm64 instances, request wants x86_64 (the default; set arch: arm64 to use ARM)"
    assert why["aws m7g"] == "skipped by default: " + default  # $2.61/h, below the chosen $3.07/h
    assert why["gcp c4a-standard"] == "skipped by default: " + default
    assert why["azure Standard_Dps_v5"] == "skipped by default: " + default
    # Nothing cheaper was passed over for an arm64 request: plain reasons, no "skipped".
    arm_why = {r.family: r.reason for r in rank(TRAPS, replace(big, arch="arm64")).rejections}
    assert arm_why["aws m6i"] == "x86_64 instances, request wants arm64"
    arm = picks(replace(big, arch="arm64"))
    assert arm == ["Standard_D64ps_v5", "c4a-standard-64", "r8g.16xlarge", "c7g.16xlarge", "m7g.16xlarge"]
    assert {r.offer.arch for r in rank(TRAPS, replace(big, arch="arm64")).offers} == {"arm64"}
    # The catalog corrected the offers themselves, so the provisioner boots an ARM image.
    assert {o.instance_type: o.arch for o in TRAPS.offers}["m7g.16xlarge"] == "arm64"
    # An explicit x86_64 is the default made explicit; a named ARM type brings its own arch.
    assert picks(replace(big, arch="x86_64")) == ["m6i.16xlarge"]
    assert picks(Resources(cpus=64, instance_type="m7g.16xlarge")) == ["m7g.16xlarge"]
    why = {r.family: r.reason for r in rank(TRAPS, Resources(instance_type="m7g.16xlarge", arch="x86_64")).rejections}
    assert why["aws m7g"] == "arm64 instances, request wants x86_64"


def test_arch_alternatives_inherit_and_host_offers_match_any_arch_unless_asked():
    res = Resources(
        arch="arm64", any_of=(Resources(cpus=8, infra="gcp"), Resources(cpus=8, infra="aws", arch="x86_64"))
    )
    assert picks(res) == ["t2a-standard-8", "m6i.2xlarge"]
    host = Offer("local", "local", "", "local-host", 16, 64, arch="aarch64")
    found = rank(TRAPS, Resources(cpus=2, infra="local"), host_offers=[host]).offers
    assert [r.offer.instance_type for r in found] == ["local-host"]  # the machine exists: any arch
    assert rank(TRAPS, Resources(cpus=2, infra="local", arch="arm64"), host_offers=[host]).offers
    refused = rank(TRAPS, Resources(cpus=2, infra="local", arch="x86_64"), host_offers=[host])
    assert not refused.offers
    assert any(r.reason.startswith("has 16 CPUs") and "arm64" in r.reason for r in refused.rejections)
