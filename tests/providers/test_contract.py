"""The provider contract: every provider plugin (local, aws, gcp, azure ...) passes these.

Each test drives the real plugin against its harness's endpoint and checks the ground
truth the endpoint holds (see harness.py).
"""

from __future__ import annotations

import contextlib
import uuid

import pytest

from providers.harness import LAUNCH, ProviderHarness
from styx.common.auth import node_of_join_token
from styx.provider import PLANE_LABEL, InstanceStatus, ProviderError


def _create(h: ProviderHarness, node_id: str, request_id: str = "", spot: bool = False) -> str:
    return h.provider().create(
        node_id=node_id,
        offer=h.offer(),
        spot=spot,
        labels={"styx.dev/cluster": "contract", PLANE_LABEL: "plane-contract"},
        request_id=request_id or str(uuid.uuid4()),
        agent_launch=LAUNCH,
    )


def test_check_reports_enabled(harness: ProviderHarness) -> None:
    status = harness.provider().check()
    assert status.enabled, status.reason


def test_create_list_terminate(harness: ProviderHarness) -> None:
    provider = harness.provider()
    instance_id = _create(harness, "node-contract1")
    assert harness.live_instances() == {instance_id: "node-contract1"}
    listed = {i.instance_id: i for i in provider.list_instances()}
    assert listed[instance_id].node_id == "node-contract1"
    assert listed[instance_id].plane_id == "plane-contract"  # the owner label round-trips
    assert listed[instance_id].status in (InstanceStatus.PENDING, InstanceStatus.RUNNING)
    provider.terminate(instance_id)
    assert harness.live_instances() == {}
    provider.terminate(instance_id)  # terminating what is gone succeeds


def test_create_is_idempotent_on_request_id(harness: ProviderHarness) -> None:
    first = _create(harness, "node-contract2", request_id="req-contract-2")
    again = _create(harness, "node-contract2", request_id="req-contract-2")
    assert first == again
    assert list(harness.live_instances()) == [first]


def test_spot(harness: ProviderHarness) -> None:
    if not harness.supports_spot:
        pytest.skip(f"{harness.name} has no spot market")
    instance_id = _create(harness, "node-contract3", spot=True)
    assert harness.is_spot(instance_id)


def test_boot_script_carries_a_join_token_not_the_shared_one(harness: ProviderHarness) -> None:
    instance_id = _create(harness, "node-contract4")
    env = harness.boot_env(instance_id)
    if harness.name == "local":
        assert env == {}  # local agents inherit the environment; there is no boot script
        return
    assert env["STYX_NODE_ID"] == "node-contract4"
    assert env["STYX_SCHEDULER_ENDPOINT"] == LAUNCH.scheduler_endpoint
    assert "STYX_TOKEN" not in env and LAUNCH.token not in env["STYX_JOIN_TOKEN"]
    assert node_of_join_token(LAUNCH.token, env["STYX_JOIN_TOKEN"]) == "node-contract4"


def test_unknown_instance_terminates_cleanly_or_with_a_classified_error(harness: ProviderHarness) -> None:
    provider = harness.provider()
    # Succeeding (already gone) or a ProviderError are both fine; any other exception fails.
    with contextlib.suppress(ProviderError):
        provider.terminate("i-does-not-exist-0000" if harness.name != "local" else "pid-999999999")
