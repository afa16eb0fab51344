"""The plugin kit (styx.provider): cached check, tags, error codes, config, capabilities."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from sqlalchemy import Engine

from styx.common.clock import FakeClock
from styx.common.errors import FailedPrecondition
from styx.provider import (
    TAG_MANAGED,
    TAG_NODE,
    TAG_REQUEST,
    AgentLaunch,
    CachedCheck,
    Capabilities,
    ConfigError,
    ErrorCodes,
    Offer,
    ProviderBase,
    ProviderConfig,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
    TagRules,
    TextRule,
    capabilities_of,
    hookimpl,
    instance_tags,
    missing_operations,
    user_tags,
)
from styx.provider.types import CreateRequest
from styx.provisioner.core import Provisioner
from styx.provisioner.plugins import collect_providers, make_plugin_manager

# -- CachedCheck ---------------------------------------------------------------------------


def test_cached_check_probes_once_per_ttl_on_the_injected_clock() -> None:
    clock = FakeClock()
    answers = [ProviderStatus(False, "no credentials"), ProviderStatus(True), ProviderStatus(True)]
    calls: list[int] = []

    def probe() -> ProviderStatus:
        calls.append(1)
        return answers[len(calls) - 1]

    check = CachedCheck(probe, ok_ttl_s=300, fail_ttl_s=30, clock=clock)
    assert not check().enabled and not check().enabled and len(calls) == 1
    clock.advance(29)
    assert not check().enabled and len(calls) == 1
    clock.advance(1)  # the failure is remembered for 30 s only
    assert check().enabled and len(calls) == 2
    clock.advance(299)
    assert check().enabled and len(calls) == 2
    check.invalidate()
    assert check().enabled and len(calls) == 3


def test_cached_check_never_raises() -> None:
    def probe() -> ProviderStatus:
        raise RuntimeError("secret-ish detail")

    status = CachedCheck(probe, clock=FakeClock())()
    assert not status.enabled and "RuntimeError" in status.reason and "secret" not in status.reason
    with pytest.raises(ValueError, match="TTL"):
        CachedCheck(probe, ok_ttl_s=-1)


# -- tags ----------------------------------------------------------------------------------

RULES = TagRules(
    key=TextRule(max_len=10, invalid=r"[^a-z-]"),
    value=TextRule(max_len=5),
    max_tags=6,
    reserved_prefixes=("cloud",),
    reserved_keys=frozenset({"Name"}),
)


def test_styx_tags_win_and_labels_follow_the_cloud_rules() -> None:
    tags = instance_tags("node-1", "req-123456", {TAG_NODE: "spoof", "a.b": "long-value", "Name": "x"}, RULES)
    assert tags[TAG_MANAGED] == "true" and tags[TAG_NODE] == "node-" and tags[TAG_REQUEST] == "req-1"
    assert tags["a_b"] == "long-"  # key cleaned, value cut
    assert "Name" not in tags  # reserved for the provider itself


def test_reserved_prefixes_are_dropped_or_renamed_and_the_count_is_capped() -> None:
    assert user_tags({"cloud-x": "v", "k": "v"}, RULES) == {"k": "v"}
    renaming = TagRules(key=RULES.key, value=RULES.value, reserved_prefixes=("cloud",), rename_reserved="x-")
    assert user_tags({"cloud-x": "v"}, renaming) == {"x-cloud-x": "v"}
    many = user_tags({key: "v" for key in "dcba"}, RULES)  # 6 tags at most, 4 of them Styx's (with "Name")
    assert list(many) == ["a", "b"]  # the first in key order are kept


def test_hashing_rules_keep_distinct_inputs_apart_and_are_stable() -> None:
    rule = TextRule(max_len=12, valid=r"[a-z]{0,12}", invalid=r"[^a-z]+", lowercase=True, hash_changed="-", keep=4)
    assert rule.apply("plain") == "plain"
    assert rule.apply("Plain") != rule.apply("plain") and rule.apply("Plain") == rule.apply("Plain")
    long_rule = TextRule(max_len=8, hash_long="-", keep=3, digest_len=4)
    assert len(long_rule.apply("x" * 20)) == 8 and long_rule.apply("x" * 20) != long_rule.apply("x" * 21)


# -- error codes ---------------------------------------------------------------------------

CODES = ErrorCodes(
    capacity=frozenset({"NoRoom"}),
    quota=frozenset({"TooMany"}),
    auth=frozenset({"Denied"}),
    invalid=frozenset({"BadField"}),
    patterns=(("Invalid.*", ProviderErrorKind.INVALID),),
    message_words=(("NotAllowed", "quota", ProviderErrorKind.QUOTA),),
)


@pytest.mark.parametrize(
    "codes,status,message,kind",
    [
        (["NoRoom"], 409, "", ProviderErrorKind.CAPACITY),
        (["BadField", "TooMany"], 400, "", ProviderErrorKind.QUOTA),  # capacity, quota, auth, invalid order
        (["InvalidAmi"], None, "", ProviderErrorKind.INVALID),
        (["NotAllowed"], 409, "exceeds the Cores quota", ProviderErrorKind.QUOTA),
        (["NotAllowed"], 409, "busy", ProviderErrorKind.INVALID),
        (["BadField"], 403, "", ProviderErrorKind.AUTH),  # a 403 is about permissions
        (["Whatever"], 429, "", ProviderErrorKind.CAPACITY),
        (["Whatever"], 503, "", ProviderErrorKind.INTERNAL),
        (["Whatever"], None, "", ProviderErrorKind.INTERNAL),
    ],
)
def test_error_codes_classify(codes: list[str], status: int | None, message: str, kind: ProviderErrorKind) -> None:
    assert CODES.kind_of(codes, status, message) is kind


# -- config --------------------------------------------------------------------------------


def test_config_reads_a_file_under_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "ex.yaml"
    path.write_text("regions: [a, b]\nmax_nodes: 3\npublic_ip: true\nSHARED_ID: s1\nSTYX_EX_POLL: 2\n")
    config = ProviderConfig.load("STYX_EX_", {"STYX_EX_CONFIG_FILE": str(path), "STYX_EX_POLL": "5"})
    assert config.csv("STYX_EX_REGIONS") == ["a", "b"]
    assert config.integer("STYX_EX_MAX_NODES", 1) == 3 and config.flag("STYX_EX_PUBLIC_IP", False)
    assert config.get("SHARED_ID") == "s1"  # an upper-case key is a full variable name
    assert config.number("STYX_EX_POLL", 1) == 5  # the environment wins
    json_path = tmp_path / "ex.json"
    json_path.write_text(json.dumps({"regions": "c"}))
    assert ProviderConfig.load("STYX_EX_", {}, path=json_path).csv("STYX_EX_REGIONS") == ["c"]


@pytest.mark.parametrize(
    "env,read,needle",
    [
        ({"STYX_EX_N": "many"}, lambda c: c.number("STYX_EX_N", 1), "STYX_EX_N: 'many' is not a number"),
        ({"STYX_EX_N": "-1"}, lambda c: c.number("STYX_EX_N", 1), "STYX_EX_N: must be"),
        ({"STYX_EX_N": "0"}, lambda c: c.number("STYX_EX_N", 1, positive=True), "positive"),
        ({"STYX_EX_N": "nan"}, lambda c: c.number("STYX_EX_N", 1), "STYX_EX_N"),
        ({"STYX_EX_N": "1.5"}, lambda c: c.integer("STYX_EX_N", 1), "whole number"),
        ({"STYX_EX_F": "maybe"}, lambda c: c.flag("STYX_EX_F", True), "STYX_EX_F"),
        ({"STYX_EX_P": "k"}, lambda c: c.pairs("STYX_EX_P"), "KEY=VALUE"),
        ({"STYX_EX_CONFIG_FILE": "/nonexistent/x.yaml"}, lambda c: c, "cannot read"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], read, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=needle) as err:
        read(ProviderConfig.load("STYX_EX_", env))
    assert err.value.hint


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        ProviderConfig.load("STYX_EX_", {}, path=path)
    path.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid"):
        ProviderConfig.load("STYX_EX_", {}, path=path)


# -- capabilities --------------------------------------------------------------------------

OFFER = Offer(provider="caps", region="r", zone="", instance_type="t", cpus=1, memory_gib=1)
LAUNCH = AgentLaunch("127.0.0.1:1", "127.0.0.1:2", token="t")


class _Caps(ProviderBase):
    """A kit provider; ``capabilities`` is set per test."""

    name = "caps"

    def __init__(self, capabilities: Capabilities) -> None:
        super().__init__()
        self.capabilities = capabilities
        self.made: list[CreateRequest] = []
        self.stopped: list[str] = []

    def check(self) -> ProviderStatus:
        return ProviderStatus(True)

    def create_instance(self, request: CreateRequest) -> str:
        self.made.append(request)
        return f"i-{request.node_id}"

    def terminate(self, instance_id: str) -> None:
        return None

    def list_instances(self) -> list[ProviderInstance]:
        return []

    def stop(self, instance_id: str) -> None:
        self.stopped.append(instance_id)


def test_create_arrives_as_one_request() -> None:
    provider = _Caps(Capabilities())
    labels: Mapping[str, str] = {"styx-plane": "p1"}
    assert provider.create(node_id="n1", offer=OFFER, spot=False, labels=labels, request_id="r", agent_launch=LAUNCH)
    (request,) = provider.made
    assert (request.node_id, request.request_id, request.plane_id) == ("n1", "r", "p1")


def test_core_reads_declared_capabilities_not_method_names(engine_factory) -> None:  # type: ignore[no-untyped-def]
    # The provider HAS a stop method but does not declare stop_start: the core refuses,
    # rather than discovering the method by its name.
    engine: Engine = engine_factory("provisioner")
    provider = _Caps(Capabilities())
    prov = Provisioner(engine, {"caps": provider}, LAUNCH, reconcile_interval_s=3600)
    prov.start(reconcile=False)
    try:
        op = prov.provision("req-1", OFFER, "node-a")
        for _ in prov.watch_operation(op.operation_id, poll_s=0.05):
            pass
        with pytest.raises(FailedPrecondition, match="cannot stop"):
            prov.stop_instance("stop-1", "node-a")
        with pytest.raises(FailedPrecondition, match="cannot list its catalog"):
            prov.provider_catalog("caps")
        assert provider.stopped == []
    finally:
        prov.stop()


def test_loader_disables_a_provider_whose_declared_capability_lacks_its_operations() -> None:
    declared = _Caps(Capabilities(stop_start=True, catalog=True))  # has stop, lacks start and catalog
    assert missing_operations(declared) == ["start (for stop_start)", "catalog (for catalog)"]

    class Plugin:
        @hookimpl
        def styx_provider(self) -> _Caps:
            return declared

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Plugin(), name="caps")
    status = collect_providers(pm)["caps"].check()
    assert not status.enabled and "start (for stop_start)" in status.reason


def test_a_provider_without_capabilities_declares_none() -> None:
    assert capabilities_of(object()) == Capabilities()
    assert capabilities_of(type("Odd", (), {"capabilities": "stop"})()) == Capabilities()
    assert Capabilities(spot=True, ports=True).names() == ["spot", "ports"]


# -- plugins on the kit: malformed settings are reported, not silently replaced ---------------


def test_local_provider_reports_a_malformed_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from styx_plugins.local.provider import LocalProvider

    monkeypatch.setenv("STYX_LOCAL_NODE_CPUS", "many")
    status = LocalProvider(home=tmp_path).check()
    assert not status.enabled and "STYX_LOCAL_NODE_CPUS" in status.reason and status.hint
    monkeypatch.setenv("STYX_LOCAL_NODE_CPUS", "2")
    monkeypatch.setenv("STYX_LOCAL_MAX_NODES", "two")
    assert "STYX_LOCAL_MAX_NODES" in LocalProvider(home=tmp_path).check().reason
    monkeypatch.setenv("STYX_LOCAL_MAX_NODES", "3")
    provider = LocalProvider(home=tmp_path)
    assert provider.check().enabled
    (offer,) = provider.offers()
    assert (offer.cpus, offer.max_instances, offer.price_per_hour) == (2.0, 3, 0.0)


def test_azure_provider_reports_a_malformed_number() -> None:
    pytest.importorskip("azure.mgmt.compute")
    from styx_plugins.azure.provider import AzureProvider

    env = {"AZURE_SUBSCRIPTION_ID": "s", "STYX_AZURE_RESOURCE_GROUP": "g", "STYX_AZURE_SUBNET_ID": "/n"}
    status = AzureProvider(env={**env, "STYX_AZURE_OS_DISK_GB": "big"}).check()
    assert not status.enabled and "STYX_AZURE_OS_DISK_GB" in status.reason


def test_list_providers_shows_declared_capabilities(engine_factory) -> None:  # type: ignore[no-untyped-def]
    prov = Provisioner(engine_factory("provisioner"), {"caps": _Caps(Capabilities(stop_start=True, spot=True))}, LAUNCH)
    prov.start(reconcile=False)
    try:
        (info,) = prov.list_providers()
        assert info.capabilities == ("stop_start", "spot")
    finally:
        prov.stop()
