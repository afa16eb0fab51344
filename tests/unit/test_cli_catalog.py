"""sky check / show-gpus / catalog / status -v / launch --dryrun offers: parsing and formatting
(no sockets)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from styx.common.timeutil import to_timestamp
from styx.v1 import broker_pb2, common_pb2, provisioner_pb2
from styx_cli import attempts, catalog
from styx_cli.errors import EXIT_USAGE, CliError
from styx_cli.launch import offer_lines, rejection_lines, task_offer_lines
from styx_cli.main import build_parser, main

AWS_CSV = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone,Arch
p4d.24xlarge,A100,8.0,96.0,1152.0,,32.7726,12.5,us-east-1,use1-az1,x86_64
m6i.2xlarge,,,8.0,32.0,,0.384,0.15,us-east-1,use1-az2,x86_64
m6i.2xlarge,,,8.0,32.0,,,0.15,us-west-2,usw2-az1,x86_64
"""


def offer(**kw: object) -> common_pb2.Offer:
    base = dict(
        provider="aws",
        region="us-east-1",
        zone="use1-az1",
        instance_type="p4d.24xlarge",
        cpus=96,
        memory_gib=1152,
        accelerator_name="A100",
        accelerator_count=8,
        accelerator_memory_gib=40,
        price_per_hour=32.77,
        spot_price_per_hour=12.5,
    )
    base.update(kw)
    return common_pb2.Offer(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------- parsing


def test_new_commands_parse() -> None:
    parser = build_parser()
    check = parser.parse_args(["check", "aws", "gcp", "--json"])
    assert (check.provider, check.json, check.handler) == (["aws", "gcp"], True, "catalog:cmd_check")
    gpus = parser.parse_args(["show-gpus", "A100:8", "--infra", "gcp/us-central1", "--all"])
    assert (gpus.name, gpus.infra, gpus.all, gpus.json) == ("A100:8", "gcp/us-central1", True, False)
    assert parser.parse_args(["show-gpus"]).name is None
    imp = parser.parse_args(["catalog", "import", "--format", "skypilot", "cats", "--provider", "aws"])
    assert (imp.action, imp.directory, imp.format, imp.provider) == ("import", "cats", "skypilot", ["aws"])
    assert parser.parse_args(["catalog", "import", "cats"]).format == "skypilot"
    assert parser.parse_args(["catalog", "list", "--json"]).json
    assert parser.parse_args(["status", "-v"]).verbose and not parser.parse_args(["status"]).verbose


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["catalog"], "give an action"),
        (["catalog", "import", "--format", "csv", "x"], "--format: 'csv' is not a known catalog format"),
        (["catalog", "import", "/no/such/dir"], "/no/such/dir: no such directory"),
        (["show-gpus", "A100:x"], "is not NAME[:COUNT]"),
        (["show-gpus", "--infra", "aws/us-east-1/use1-az1"], "PROVIDER[/REGION]"),
        (["show-gpus", "--infra", "aws//x"], "--infra:"),
    ],
)
def test_usage_errors_exit_2_before_connecting(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A remote endpoint nobody listens on: a usage error must come before any connection.
    monkeypatch.setenv("STYX_ENDPOINT", "127.0.0.1:9")
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_import_of_a_dir_without_catalogs_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CliError) as info:
        catalog.load_skypilot(str(tmp_path))
    assert info.value.exit_code == EXIT_USAGE and "vms.csv" in info.value.message


def test_load_skypilot_uses_the_broker_loader(tmp_path: Path) -> None:
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "vms.csv").write_text(AWS_CSV)
    offers, stats, seconds = catalog.load_skypilot(str(tmp_path))
    assert sorted(o.instance_type for o in offers["aws"]) == ["m6i.2xlarge", "p4d.24xlarge"]
    assert stats.skipped == {"aws: no on-demand price": 1} and seconds >= 0


def test_parse_gpu_name() -> None:
    assert catalog.parse_gpu_name("A100") == ("A100", 0)
    assert catalog.parse_gpu_name("H100:8") == ("H100", 8)


# ---------------------------------------------------------------- sky check


def test_check_lines_show_reason_and_fix_of_disabled_providers() -> None:
    infos = [
        provisioner_pb2.ProviderInfo(
            name="aws", enabled=False, reason="no AWS credentials found", hint="run aws configure"
        ),
        provisioner_pb2.ProviderInfo(name="local", enabled=True),
    ]
    data = [catalog.provider_to_dict(p) for p in infos]
    assert data[0] == {
        "name": "aws",
        "enabled": False,
        "reason": "no AWS credentials found",
        "hint": "run aws configure",
    }
    lines = catalog.check_lines(data, io.StringIO())
    assert lines == [
        "  aws    disabled: no AWS credentials found",
        "         fix: run aws configure",
        "  local  enabled",
        "enabled: local",
    ]
    assert catalog.check_lines([], io.StringIO()) == ["no provider plugin is loaded by the provisioner"]


def test_check_lines_are_coloured_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    lines = catalog.check_lines(
        [
            {"name": "gcp", "enabled": False, "reason": "x", "hint": "y"},
            {"name": "local", "enabled": True, "reason": "", "hint": ""},
        ],
        Tty(),
    )
    assert "\033[31mdisabled\033[0m" in lines[0] and "\033[32menabled\033[0m" in lines[2]


# ---------------------------------------------------------------- sky show-gpus


def test_accelerator_rows_cheapest_per_provider() -> None:
    info = broker_pb2.AcceleratorInfo(
        name="A100",
        counts=[1, 8],
        providers=["aws", "gcp"],
        memory_gib=40,
        offers=[
            broker_pb2.AcceleratorOffer(count=8, cheapest=offer(), cheapest_spot_price_per_hour=12.5),
            broker_pb2.AcceleratorOffer(
                count=1,
                cheapest=offer(provider="gcp", instance_type="a2-highgpu-1g", accelerator_count=1, price_per_hour=3.67),
                cheapest_spot_price_per_hour=1.1,
            ),
            broker_pb2.AcceleratorOffer(
                count=8,
                cheapest=offer(provider="gcp", instance_type="a2-highgpu-8g", price_per_hour=29.39),
                cheapest_spot_price_per_hour=0,
            ),
        ],
    )
    data = catalog.accelerator_to_dict(info, enabled={"gcp"})
    assert data["counts"] == [1, 8] and [e["provider"] for e in data["by_provider"]] == ["aws", "gcp"]
    gcp = data["by_provider"][1]
    assert gcp["enabled"] and gcp["cheapest"]["instance_type"] == "a2-highgpu-1g"
    assert gcp["cheapest_spot"] == {"count": 1, "price_per_hour": 1.1}
    rows = catalog.accelerator_rows([data])
    assert rows[0] == ["A100", "40GB", "1, 8", "aws (disabled)", "$32.77 (8x p4d.24xlarge)", "$12.50 (8x)"]
    assert rows[1] == ["", "", "", "gcp", "$3.67 (1x a2-highgpu-1g)", "$1.10 (1x)"]
    assert catalog.accelerator_to_dict(info)["by_provider"][0]["enabled"] is None


def test_offer_rows_keep_the_cheapest_region_per_type() -> None:
    ranked = [
        broker_pb2.RankedOffer(offer=offer(region="eu-west-1", price_per_hour=40.0), provider_enabled=False),
        broker_pb2.RankedOffer(offer=offer(), provider_enabled=False),
        broker_pb2.RankedOffer(
            offer=offer(
                provider="gcp",
                instance_type="a2-highgpu-8g",
                region="us-central1",
                price_per_hour=29.39,
                spot_price_per_hour=0,
            ),
            provider_enabled=True,
        ),
    ]
    offers = catalog.cheapest_per_type(catalog.ranked_to_dict(r) for r in ranked)
    assert [(o["provider"], o["region"]) for o in offers] == [("gcp", "us-central1"), ("aws", "us-east-1")]
    rows = catalog.offer_rows(offers)
    assert rows[0] == ["A100", "8", "gcp", "a2-highgpu-8g", "96", "1152GB", "40GB", "$29.39", "-", "us-central1"]
    assert rows[1][2] == "aws (disabled)" and rows[1][8] == "$12.50"


# ---------------------------------------------------------------- sky catalog


def test_catalog_rows_and_import_rows() -> None:
    infos = [
        broker_pb2.CatalogInfo(
            provider="aws", offers=523, imported=True, regions=23, imported_at=to_timestamp(1_700_000_000.0)
        ),
        broker_pb2.CatalogInfo(provider="gcp", offers=392, regions=5),
    ]
    data = [catalog.catalog_to_dict(c) for c in infos]
    assert data[0] == {
        "provider": "aws",
        "offers": 523,
        "regions": 23,
        "source": "imported",
        "imported_at": "2023-11-14T22:13:20Z",
    }
    assert catalog.catalog_rows(data)[1] == ["gcp", "392", "5", "built-in", "-"]
    rows = catalog.import_rows(
        [
            {"provider": "azure", "offers": 59856, "skipped": {"fractional GPU": 114}, "import_s": 1.234},
            {"provider": "aws", "offers": 0, "skipped": {}, "import_s": None},
        ]
    )
    assert rows == [["azure", "59,856", "114", "1.23s"], ["aws", "0", "0", "not sent"]]


# ---------------------------------------------------------------- sky status -v


def test_attempt_and_event_lines() -> None:
    attempt = broker_pb2.ProvisioningAttempt(
        node_id="n-1",
        allocation_id="t-1/1",
        task_id="t-1",
        offer=offer(),
        spot=True,
        hourly_price=12.5,
        state=broker_pb2.PROVISIONING_ATTEMPT_STATE_FAILED,
        error="InsufficientInstanceCapacity in use1-az1",
        error_kind=provisioner_pb2.PROVIDER_ERROR_KIND_CAPACITY,
        started_at=to_timestamp(1_700_000_000.0),
    )
    data = attempts.attempt_to_dict(attempt)
    assert (data["outcome"], data["error_kind"], data["started_at"]) == ("FAILED", "CAPACITY", "2023-11-14T22:13:20Z")
    line = attempts.attempt_line(data, io.StringIO())
    assert line == (
        "aws/us-east-1/use1-az1 p4d.24xlarge $12.50/h spot  FAILED      "
        "CAPACITY: InsufficientInstanceCapacity in use1-az1  (node n-1)"
    )
    ok = attempts.attempt_to_dict(
        broker_pb2.ProvisioningAttempt(
            offer=offer(provider="local", region="local", zone="", instance_type="host"),
            state=broker_pb2.PROVISIONING_ATTEMPT_STATE_REGISTERED,
        )
    )
    assert ok["error_kind"] == "" and "ERROR" not in attempts.attempt_line(ok, io.StringIO())
    event = common_pb2.Event(
        seq=3,
        type=common_pb2.EVENT_TYPE_SCHEDULED,
        state=common_pb2.TASK_STATE_SCHEDULED,
        attempt=1,
        node_id="n-1",
        message="on n-1",
        time=to_timestamp(1_700_000_000.0),
    )
    edata = attempts.event_to_dict(event)
    assert attempts.event_line(edata) == "2023-11-14T22:13:20Z  SCHEDULED  attempt 1  node n-1  on n-1"
    block = attempts.detail_lines(
        {"task_id": "t-1", "name": "train", "provisioning_attempts": [data], "events": [edata]}, io.StringIO()
    )
    assert block[0] == "t-1 (train):" and "provisioning attempts (newest first):" in block[1]
    assert block[-1].strip().startswith("2023-11-14T22:13:20Z  SCHEDULED")
    unknown = attempts.detail_lines(
        {"task_id": "t-2", "name": "x", "provisioning_attempts": None, "attempts_error": "no broker endpoint"},
        io.StringIO(),
    )
    assert unknown == ["t-2 (x):", "  provisioning attempts: unknown (no broker endpoint)"]


# ---------------------------------------------------------------- launch --dryrun offers


def test_dryrun_offer_lines_enabled_disabled_and_refused() -> None:
    enabled = broker_pb2.RankedOffer(
        offer=offer(
            provider="local",
            region="local",
            zone="",
            instance_type="host",
            accelerator_name="",
            accelerator_count=0,
            cpus=2,
            memory_gib=8,
        ),
        hourly_price=0,
        total_hourly_price=0,
        provider_enabled=True,
    )
    cheap_disabled = broker_pb2.RankedOffer(offer=offer(), hourly_price=32.77, total_hourly_price=32.77)
    live = broker_pb2.OptimizeResponse(offers=[enabled])
    whatif = broker_pb2.OptimizeResponse(offers=[enabled, cheap_disabled])
    assert task_offer_lines("t", 1, live, whatif) == ["  t  chosen: local/local host (2 vCPU, 8 GiB) $0.00/h"]

    only_disabled = broker_pb2.OptimizeResponse(offers=[cheap_disabled, cheap_disabled])
    lines = task_offer_lines("t", 1, broker_pb2.OptimizeResponse(), only_disabled)
    assert lines[0] == "  t  no enabled provider can run it now; enable aws (sky check)"
    assert lines[1].startswith("     cheapest: aws/us-east-1/use1-az1 p4d.24xlarge") and "(aws disabled" in lines[1]
    assert "runner-up:" in lines[2]

    pricier = broker_pb2.RankedOffer(
        offer=offer(provider="gcp"), hourly_price=40, total_hourly_price=40, provider_enabled=True
    )
    hint = task_offer_lines(
        "t",
        1,
        broker_pb2.OptimizeResponse(offers=[pricier]),
        broker_pb2.OptimizeResponse(offers=[cheap_disabled, pricier]),
    )
    assert hint[0].startswith("  t  chosen: gcp/") and "cheaper on a disabled provider: aws/" in hint[1]

    rejections = [broker_pb2.Rejection(family=f"gcp a{i}", reason=f"reason {i}") for i in range(10)]
    refused = task_offer_lines(
        "t",
        1,
        broker_pb2.OptimizeResponse(),
        broker_pb2.OptimizeResponse(rejections=rejections, request_summary="A100:3"),
    )
    assert refused[0] == "  t  no offer fits (A100:3):"
    assert refused[1] == "       gcp a0: reason 0" and refused[-1].endswith("... and 2 more")
    assert len(refused) == 1 + 8 + 1
    one = broker_pb2.OptimizeResponse(rejections=rejections[:1])
    assert rejection_lines("t", 1, one) == ["  t  no offer fits: gcp a0: reason 0"]
    # Without whatif an answer's offers are never marked disabled (provider_enabled is unset there).
    assert "disabled" not in offer_lines("t", 1, broker_pb2.OptimizeResponse(offers=[cheap_disabled]))[0]
