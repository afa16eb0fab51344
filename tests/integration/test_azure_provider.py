"""The Azure provider plugin on its own: the real azure-mgmt-compute client against
tests/fakes/azure_compute.py, a fake speaking the documented ARM REST wire format (no
runnable Azure Resource Manager exists). Configuration, naming, tags, spot, stop/start,
error classification, and the plugin's registration.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes.azure_compute import FakeAzureCompute
from styx.provider import AgentLaunch, Offer, ProviderError, ProviderErrorKind
from styx.provisioner.plugins import collect_providers, make_plugin_manager
from styx_plugins.azure.config import DEFAULT_IMAGE, AzureSettings
from styx_plugins.azure.errors import kind_of
from styx_plugins.azure.provider import AzureProvider, azure_zone, sanitise_tags, vm_name

pytest.importorskip("azure.mgmt.compute", reason="pip install 'styx[azure]'")

LAUNCH = AgentLaunch("127.0.0.1:1", "127.0.0.1:2", "shared-secret")


def offer(zone: str = "1", region: str = "eastus") -> Offer:
    return Offer(provider="azure", region=region, zone=zone, instance_type="Standard_D2s_v5", cpus=2, memory_gib=8)


@pytest.fixture
def fake() -> Iterator[FakeAzureCompute]:
    with FakeAzureCompute() as f:
        yield f


def create(provider: AzureProvider, node_id: str, **kw: object) -> str:
    args: dict[str, object] = dict(
        node_id=node_id, offer=offer(), spot=False, labels={}, request_id=f"req-{node_id}", agent_launch=LAUNCH
    )
    args.update(kw)
    return provider.create(**args)  # type: ignore[arg-type]  # keyword bag for brevity


def test_check_names_what_is_missing_and_never_raises() -> None:
    status = AzureProvider(env={}).check()
    assert not status.enabled
    assert "AZURE_SUBSCRIPTION_ID" in status.reason and "STYX_AZURE_RESOURCE_GROUP" in status.reason
    assert "STYX_AZURE_SUBNET_ID" in status.reason and status.hint
    bad_image = {
        "AZURE_SUBSCRIPTION_ID": "s",
        "STYX_AZURE_RESOURCE_GROUP": "g",
        "STYX_AZURE_SUBNET_ID": "n",
        "STYX_AZURE_IMAGE": "not-an-urn",
        "STYX_AZURE_ENDPOINT": "http://127.0.0.1:9",
    }
    assert "STYX_AZURE_IMAGE" in AzureProvider(env=bad_image).check().reason


def test_plugin_is_registered_through_the_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_SUBSCRIPTION_ID", "STYX_AZURE_RESOURCE_GROUP", "STYX_AZURE_SUBNET_ID"):
        monkeypatch.delenv(name, raising=False)
    providers = collect_providers(make_plugin_manager())
    azure = providers["azure"]
    assert isinstance(azure, AzureProvider)
    assert not azure.check().enabled  # not configured here: disabled with the fix, no crash


def test_settings_defaults_and_overrides() -> None:
    s = AzureSettings.from_env({"STYX_AZURE_SUBNET_ID": "/d", "STYX_AZURE_SUBNET_ID_WESTUS2": "/w"})
    assert s.image == DEFAULT_IMAGE and s.image_reference()["publisher"] == "Canonical"
    assert (s.subnet_for("eastus"), s.subnet_for("westus2")) == ("/d", "/w")
    assert AzureSettings(image="/subscriptions/x/images/y").image_reference() == {"id": "/subscriptions/x/images/y"}


def test_names_zones_and_tags() -> None:
    assert vm_name("node-abc") == "styx-node-abc"
    odd = vm_name("node_a.b")
    assert odd.startswith("styx-node-a-b-") and odd != vm_name("node-a-b") and len(vm_name("n" * 63)) <= 64
    assert azure_zone("eastus-2") == "2" and azure_zone("3") == "3" and azure_zone("") == ""
    tags = sanitise_tags({"styx.dev/cluster": "c", "azure-x": "y", "styx-node-id": "spoof", "k": "v" * 300})
    assert tags == {"styx.dev_cluster": "c", "x-azure-x": "y", "k": "v" * 256}


def test_error_kinds() -> None:
    assert kind_of("ZonalAllocationFailed", 200) is ProviderErrorKind.CAPACITY
    assert kind_of("SkuNotAvailable", 409) is ProviderErrorKind.CAPACITY
    quota = "Operation results in exceeding approved Total Regional Cores quota"
    assert kind_of("OperationNotAllowed", 409, quota) is ProviderErrorKind.QUOTA
    assert kind_of("OperationNotAllowed", 409, "another operation is in progress") is ProviderErrorKind.INVALID
    assert kind_of("AuthorizationFailed", 403) is ProviderErrorKind.AUTH
    assert kind_of("InternalServerError", 500) is ProviderErrorKind.INTERNAL


def test_create_body_spot_tags_and_boot_script(fake: FakeAzureCompute) -> None:
    provider = AzureProvider(env=fake.env())
    instance_id = create(provider, "node-spot", spot=True, labels={"styx.dev/cluster": "c1"})
    (vm,) = fake.vms()
    assert instance_id == vm.id
    props = vm.properties
    assert props["priority"] == "Spot" and props["evictionPolicy"] == "Delete"
    assert props["billingProfile"] == {"maxPrice": -1}
    assert vm.tags == {
        "styx-managed": "true",
        "styx-node-id": "node-spot",
        "styx-request-id": "req-node-spot",
        "styx.dev_cluster": "c1",
    }
    nic = props["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]
    assert nic["deleteOption"] == "Delete" and props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert nic["ipConfigurations"][0]["properties"]["subnet"]["id"] == fake.env()["STYX_AZURE_SUBNET_ID"]
    assert vm.custom_data.startswith("#!/bin/bash") and "shared-secret" not in vm.custom_data
    # ARM never returns customData; the provider does not depend on reading it back.
    assert "customData" not in provider._get(vm.name)["properties"]["osProfile"]


def test_stop_start_and_status(fake: FakeAzureCompute) -> None:
    provider = AzureProvider(env=fake.env())
    instance_id = create(provider, "node-power")
    provider.stop(instance_id)
    assert fake.vm("styx-node-power").power == "deallocated"
    provider.start(instance_id)
    assert fake.vm("styx-node-power").power == "running"
    assert [(i.node_id, i.status.value) for i in provider.list_instances()] == [("node-power", "running")]


def test_errors_are_classified(fake: FakeAzureCompute) -> None:
    provider = AzureProvider(env=fake.env())
    fake.fail_creates(
        "OperationNotAllowed", "results in exceeding approved standardDSv5Family Cores quota", mode="sync", zone="2"
    )
    with pytest.raises(ProviderError) as err:
        create(provider, "node-quota", offer=offer("2"))
    assert err.value.kind is ProviderErrorKind.QUOTA
    fake.fail_creates("AllocationFailed", zone="3")
    with pytest.raises(ProviderError) as err:
        create(provider, "node-alloc", offer=offer("3"))
    assert err.value.kind is ProviderErrorKind.CAPACITY
    assert fake.vms() == []  # the Failed VM ARM kept was deleted
    with pytest.raises(ProviderError) as err:
        AzureProvider(env={**fake.env(), "STYX_AZURE_RESOURCE_GROUP": "nope"}).list_instances()
    assert err.value.kind is ProviderErrorKind.INVALID and "ResourceGroupNotFound" in err.value.message
    fake.deny_auth()
    with pytest.raises(ProviderError) as err:
        create(provider, "node-auth")
    assert err.value.kind is ProviderErrorKind.AUTH


def test_node_id_reuse_by_another_request_is_refused_and_foreign_vms_are_not_deleted(fake: FakeAzureCompute) -> None:
    provider = AzureProvider(env=fake.env())
    instance_id = create(provider, "node-reuse")
    with pytest.raises(ProviderError) as err:
        create(provider, "node-reuse", request_id="another")
    assert err.value.kind is ProviderErrorKind.INVALID
    fake.vm("styx-node-reuse").body["tags"] = {}  # as if a user's own VM had this name
    with pytest.raises(ProviderError):
        provider.terminate(instance_id)
    assert fake.vm("styx-node-reuse") is not None
    with pytest.raises(ProviderError):
        provider.terminate("/subscriptions/other/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/x")


def test_check_without_the_sdk_names_the_install_command(monkeypatch) -> None:
    """With no azure package at all, find_spec raises for the submodule: still a clean answer."""
    import importlib.util

    from styx_plugins.azure.provider import styx_provider

    def missing(name: str, *args: object) -> None:
        raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    status = styx_provider().check()
    assert not status.enabled and "Azure SDK is not installed" in status.reason
    assert status.hint == "pip install 'styx[azure]'"
