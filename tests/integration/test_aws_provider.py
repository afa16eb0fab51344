"""The AWS plugin on its own, in process: the real boto3 against a moto server
(ThreadedMotoServer, server mode) behind the fault shim of tests/fakes/aws_moto.py.

What the contract suite does not cover: error classification, check() without the SDK or
credentials, tags and labels, spot options, regions, stop/start, plugin loading, catalog().
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from fakes.aws_moto import MotoEc2, shared_moto
from fakes.aws_stack import tags_of
from providers.harness import LAUNCH
from styx.provider import InstanceStatus, Offer, ProviderError, ProviderErrorKind
from styx_plugins.aws.config import AwsConfig, ConfigError
from styx_plugins.aws.provider import AwsProvider, client_token, sanitize_labels

REGIONS = ("us-east-1", "us-west-2")


@pytest.fixture
def moto() -> Iterator[MotoEc2]:
    moto = shared_moto()
    moto.reset()
    yield moto
    moto.reset()


def make_provider(moto: MotoEc2, **overrides: object) -> AwsProvider:
    settings: dict[str, object] = {
        "regions": REGIONS,
        "images": {"*": "ami-0123456789abcdef0"},
        "endpoint_url": moto.endpoint,
        "credentials": ("testing", "testing"),
        "poll_s": 0.05,
        "create_timeout_s": 10,
        "max_attempts": 1,
    }
    settings.update(overrides)
    return AwsProvider(AwsConfig(**settings))  # type: ignore[arg-type]


def offer(zone: str = "us-east-1a", region: str = "us-east-1", instance_type: str = "t3.medium") -> Offer:
    return Offer(provider="aws", region=region, zone=zone, instance_type=instance_type, cpus=2, memory_gib=4)


def create(provider: AwsProvider, node_id: str, o: Offer | None = None, spot: bool = False, **labels: str) -> str:
    return provider.create(
        node_id=node_id,
        offer=o or offer(),
        spot=spot,
        labels=labels or {"styx.dev/cluster": "c1"},
        request_id=str(uuid.uuid4()),
        agent_launch=LAUNCH,
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InsufficientInstanceCapacity", ProviderErrorKind.CAPACITY),
        ("VcpuLimitExceeded", ProviderErrorKind.QUOTA),
        ("AuthFailure", ProviderErrorKind.AUTH),
        ("UnauthorizedOperation", ProviderErrorKind.AUTH),
        ("InvalidParameterValue", ProviderErrorKind.INVALID),
        ("InternalError", ProviderErrorKind.INTERNAL),
    ],
)
def test_run_instances_errors_are_classified(moto: MotoEc2, code: str, kind: ProviderErrorKind) -> None:
    moto.fail_zone("us-east-1a", code)
    provider = make_provider(moto)
    with pytest.raises(ProviderError) as info:
        create(provider, "node-err")
    assert info.value.kind is kind
    assert code in info.value.message and "us-east-1a" in info.value.message
    assert LAUNCH.token not in info.value.message
    # Another zone of the same region still works.
    assert create(provider, "node-ok", offer("us-east-1b")).startswith("i-")


def test_tags_labels_volumes_and_launch_options(moto: MotoEc2) -> None:
    provider = make_provider(moto)
    labels = {"styx.dev/cluster": "c1", "team name!": "ml*ops", "aws:reserved": "x", "styx-node-id": "spoof"}
    instance_id = create(provider, "node-tags", **labels)
    inst = moto.client().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    tags = tags_of(inst)
    assert tags["styx-node-id"] == "node-tags"  # a label cannot override Styx's own tags
    assert tags["styx-managed"] == "true" and tags["styx-request-id"] and tags["Name"] == "styx-node-tags"
    assert tags["styx.dev/cluster"] == "c1" and tags["team name_"] == "ml_ops"
    assert not any(k.startswith("aws:") for k in tags)
    assert inst["ImageId"] == "ami-0123456789abcdef0"
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert inst.get("InstanceLifecycle") != "spot"
    call = moto.run_instances_calls[-1]
    assert call["ClientToken"] == client_token(tags["styx-request-id"])
    assert call["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert call["MetadataOptions.HttpTokens"] == "required"
    assert {call["TagSpecification.1.ResourceType"], call["TagSpecification.2.ResourceType"]} == {"instance", "volume"}
    volumes = moto.client().describe_volumes(Filters=[{"Name": "tag:styx-node-id", "Values": ["node-tags"]}])
    assert volumes["Volumes"], "the root volume is tagged too"


def test_spot_uses_one_time_market_options(moto: MotoEc2) -> None:
    provider = make_provider(moto)
    instance_id = create(provider, "node-spot", spot=True)
    inst = moto.client().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert inst["InstanceLifecycle"] == "spot"
    call = moto.run_instances_calls[-1]
    assert call["InstanceMarketOptions.MarketType"] == "spot"
    assert call["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"
    assert call["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == "terminate"


def test_list_terminate_stop_start_across_regions(moto: MotoEc2) -> None:
    provider = make_provider(moto)
    east = create(provider, "node-east")
    west = create(provider, "node-west", offer("us-west-2a", "us-west-2"))
    listed = {i.instance_id: i for i in provider.list_instances()}
    assert {listed[east].node_id, listed[west].node_id} == {"node-east", "node-west"}
    assert listed[west].status is InstanceStatus.RUNNING
    # A new provider object (a restarted provisioner) finds the region of an id it never saw.
    fresh = make_provider(moto)
    fresh.stop(west)
    assert {i.instance_id: i.status for i in fresh.list_instances()}[west] is InstanceStatus.PENDING
    fresh.start(west)
    make_provider(moto).terminate(west)
    assert [i.instance_id for i in fresh.list_instances()] == [east]
    fresh.terminate(west)  # already gone
    with pytest.raises(ProviderError) as info:
        fresh.terminate("not-an-instance")
    assert info.value.kind is ProviderErrorKind.INVALID


def test_region_outside_the_configured_ones_is_refused(moto: MotoEc2) -> None:
    provider = make_provider(moto)
    with pytest.raises(ProviderError) as info:
        create(provider, "node-far", offer("eu-west-1a", "eu-west-1"))
    assert info.value.kind is ProviderErrorKind.INVALID
    assert "STYX_AWS_REGIONS" in info.value.message
    assert moto.run_instances_calls == []


def test_listing_fails_whole_when_a_region_fails(moto: MotoEc2) -> None:
    # An unreachable endpoint: a partial list would make reconcile think instances vanished.
    provider = make_provider(moto, endpoint_url="http://127.0.0.1:9", max_attempts=1)
    with pytest.raises(ProviderError) as info:
        provider.list_instances()
    assert info.value.kind is ProviderErrorKind.INTERNAL


def test_check_without_sdk_or_credentials_is_disabled_with_a_hint(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    status = AwsProvider(AwsConfig(regions=REGIONS)).check()
    assert not status.enabled and "credentials" in status.reason and "AWS_ACCESS_KEY_ID" in status.hint
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    status = AwsProvider(AwsConfig(regions=REGIONS)).check()
    assert not status.enabled and status.hint == "pip install 'styx[aws]'"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYX_AWS_REGIONS", "us-east-1, eu-west-1")
    monkeypatch.setenv("STYX_AWS_IMAGE_ID", "us-east-1=ami-a,eu-west-1=ami-b")
    monkeypatch.setenv("STYX_AWS_SUBNET_IDS", "us-east-1a=subnet-1")
    config = AwsConfig.from_env()
    assert config.regions == ("us-east-1", "eu-west-1")
    assert config.image_for("eu-west-1", "x86_64") == "ami-b"
    assert config.image_for("us-east-2", "arm64").startswith("resolve:ssm:") and "arm64" in config.image_for(
        "us-east-2", "arm64"
    )
    assert config.subnets == {"us-east-1a": "subnet-1"}
    monkeypatch.setenv("STYX_AWS_SUBNET_IDS", "subnet-1")
    with pytest.raises(ConfigError, match="STYX_AWS_SUBNET_IDS"):
        AwsConfig.from_env()
    monkeypatch.setenv("STYX_AWS_SUBNET_IDS", "")
    monkeypatch.delenv("STYX_AWS_REGIONS")
    assert "us-east-1" in AwsConfig.from_env().regions  # default: the built-in catalog's regions
    monkeypatch.setenv("STYX_AWS_POLL_SECONDS", "fast")
    disabled = AwsProvider().check()
    assert not disabled.enabled and "STYX_AWS_POLL_SECONDS" in disabled.reason


def test_sanitize_labels_and_client_token() -> None:
    assert sanitize_labels({"a" * 200: "v" * 300})["a" * 128] == "v" * 256
    assert len(sanitize_labels({f"k{i}": "v" for i in range(80)})) == 46
    token = client_token("x" * 500)
    assert len(token) <= 64 and token == client_token("x" * 500) and token != client_token("y")


def test_plugin_is_loaded_through_its_entry_point() -> None:
    from styx.provisioner.plugins import collect_providers, make_plugin_manager

    providers = collect_providers(make_plugin_manager())
    assert isinstance(providers["aws"], AwsProvider)


def test_catalog_from_describe_instance_types_priced_from_the_builtin_catalog(moto: MotoEc2) -> None:
    offers = make_provider(moto).catalog(["us-east-1"])
    by_key = {(o.zone, o.instance_type): o for o in offers}
    t3 = by_key[("us-east-1a", "t3.medium")]
    assert (t3.cpus, t3.memory_gib, t3.price_per_hour, t3.accelerator_count) == (2, 4, 0.0416, 0)
    p4d = [o for o in offers if o.instance_type == "p4d.24xlarge"]
    assert p4d and {o.zone for o in p4d} <= {f"us-east-1{z}" for z in "abcdef"}
    assert (p4d[0].cpus, p4d[0].accelerator_name, p4d[0].accelerator_count) == (96, "A100", 8)
    assert all(o.price_per_hour > 0 and o.provider == "aws" for o in offers)  # unpriced types left out
