"""The gcp provider plugin on the REAL google-cloud-compute client (REST transport) against
tests/fakes/gcp_compute.py, a local FAKE speaking the documented Compute Engine REST wire
format: no runnable Compute Engine exists outside Google. Checks what goes on the wire
(labels, requestId, spot scheduling, metadata), the error mapping the broker's failover
relies on, stop/start, listing across zones, check() and the lazy SDK import.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from fakes.gcp_compute import FakeCompute
from providers.harness import LAUNCH
from styx.provider import InstanceStatus, Offer, ProviderError, ProviderErrorKind
from styx.provisioner.bootstrap import parse_startup_env
from styx_plugins.gcp import naming
from styx_plugins.gcp.config import DEFAULT_IMAGE, GcpSettings
from styx_plugins.gcp.provider import GcpProvider

pytest.importorskip("google.cloud.compute_v1")

PROJECT = "styx-unit"


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    server = FakeCompute(op_delay_s=0.02).start()
    yield server
    server.stop()


def _env(fake: FakeCompute, **extra: str) -> dict[str, str]:
    return {
        "STYX_GCP_PROJECT": PROJECT,
        "STYX_GCP_COMPUTE_ENDPOINT": fake.endpoint,
        "STYX_GCP_ANONYMOUS": "1",
        **extra,
    }


def _provider(fake: FakeCompute, **extra: str) -> GcpProvider:
    return GcpProvider(GcpSettings.from_env(_env(fake, **extra)), poll_s=0.05)


def _offer(zone: str = "us-central1-a", itype: str = "e2-standard-2", gpu: str = "", gpus: int = 0) -> Offer:
    return Offer(provider="gcp", region=zone.rsplit("-", 1)[0], zone=zone, instance_type=itype, cpus=4, memory_gib=15,
                 accelerator_name=gpu, accelerator_count=gpus)  # fmt: skip


def _create(provider: GcpProvider, node_id: str, offer: Offer | None = None, spot: bool = False,
            request_id: str = "", labels: dict[str, str] | None = None) -> str:  # fmt: skip
    return provider.create(node_id=node_id, offer=offer or _offer(), spot=spot, labels=labels or {},
                           request_id=request_id or str(uuid.uuid4()), agent_launch=LAUNCH)  # fmt: skip


def test_create_puts_labels_metadata_and_request_id_on_the_wire(fake: FakeCompute) -> None:
    provider = _provider(fake)
    iid = _create(provider, "Node_Mixed.Case", request_id="Req/With Spaces", labels={"styx.dev/cluster": "Train-1"})
    vm = fake.live()[iid]
    name = naming.instance_name("Node_Mixed.Case")
    assert iid == f"us-central1-a/{name}" and vm["status"] == "RUNNING"
    labels = vm["labels"]
    assert labels["styx-managed"] == "true"
    assert labels["styx-node-id"] == naming.label_value("Node_Mixed.Case")
    assert labels["styx-request-id"] == naming.label_value("Req/With Spaces")
    assert labels["styx_dev_cluster"] == naming.label_value("Train-1")
    items = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert items["styx-node-id"] == "Node_Mixed.Case" and items["styx-request-id"] == "Req/With Spaces"
    boot = parse_startup_env(items["startup-script"])
    assert boot["STYX_AGENT_PROVIDER"] == "gcp" and boot["STYX_AGENT_ZONE"] == "us-central1-a"
    assert boot["STYX_INSTANCE_ID"] == iid and LAUNCH.token not in items["startup-script"]
    assert fake.insert_request_ids == [naming.request_uuid("insert", "Req/With Spaces")]
    disk = vm["disks"][0]
    assert disk["boot"] and disk["autoDelete"] and disk["initializeParams"]["sourceImage"] == DEFAULT_IMAGE
    assert vm["networkInterfaces"][0]["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"
    # The provider lists it with the exact node id (from metadata, not the cleaned label).
    (listed,) = provider.list_instances()
    assert (listed.instance_id, listed.node_id, listed.status) == (iid, "Node_Mixed.Case", InstanceStatus.RUNNING)


def test_spot_and_gpu_scheduling(fake: FakeCompute) -> None:
    provider = _provider(fake, STYX_GCP_GPU_IMAGE="projects/p/global/images/family/gpu")
    spot_id = _create(provider, "node-spot", spot=True)
    spot = fake.live()[spot_id]["scheduling"]
    assert spot == {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE", "automaticRestart": False,
                    "onHostMaintenance": "TERMINATE"}  # fmt: skip
    t4 = _create(provider, "node-t4", offer=_offer(itype="n1-standard-8", gpu="T4", gpus=1))
    vm = fake.live()[t4]
    assert vm["guestAccelerators"] == [
        {"acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
    ]
    assert vm["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert vm["disks"][0]["initializeParams"]["sourceImage"] == "projects/p/global/images/family/gpu"
    a100 = _create(provider, "node-a100", offer=_offer(itype="a2-highgpu-1g", gpu="A100", gpus=1))
    a2 = fake.live()[a100]
    assert "guestAccelerators" not in a2  # A2 machine types bundle their GPUs


def test_fake_honours_request_id_like_gce(fake: FakeCompute) -> None:
    """The real client sending one requestId twice gets one operation and one VM (as on GCE)."""
    provider = _provider(fake)
    api = provider._api()
    body = api.compute.Instance(
        name="plain", machine_type="zones/us-central1-a/machineTypes/e2-standard-2",
        disks=[api.compute.AttachedDisk(boot=True)], network_interfaces=[api.compute.NetworkInterface()],
    )  # fmt: skip
    request = api.compute.InsertInstanceRequest(project=PROJECT, zone="us-central1-a", instance_resource=body,
                                                request_id=str(uuid.uuid4()))  # fmt: skip
    first = api.instances.insert_unary(request=request)
    second = api.instances.insert_unary(request=request)
    assert first.name == second.name and list(fake.live()) == ["us-central1-a/plain"]


def test_retried_create_reuses_the_vm_of_its_request(fake: FakeCompute) -> None:
    provider = _provider(fake)
    first = _create(provider, "node-again", request_id="req-again")
    assert _create(provider, "node-again", request_id="req-again") == first
    assert fake.inserts == 1  # found by its request-id label before any insert
    with pytest.raises(ProviderError) as err:  # same name, another request: refused, not adopted
        _create(provider, "node-again", request_id="req-other")
    assert err.value.kind is ProviderErrorKind.INVALID and "already exists" in err.value.message
    assert list(fake.live()) == [first]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ZONE_RESOURCE_POOL_EXHAUSTED", 503, ProviderErrorKind.CAPACITY),
        ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", 503, ProviderErrorKind.CAPACITY),
        ("QUOTA_EXCEEDED", 403, ProviderErrorKind.QUOTA),
    ],
)
def test_operation_errors_are_classified(fake: FakeCompute, code: str, status: int, kind: ProviderErrorKind) -> None:
    fake.fail_zone("us-central1-b", code=code, status=status)
    provider = _provider(fake)
    with pytest.raises(ProviderError) as err:
        _create(provider, "node-fail", offer=_offer(zone="us-central1-b"))
    assert err.value.kind is kind and code in err.value.message
    assert fake.live() == {}
    assert _create(provider, "node-ok", offer=_offer(zone="us-central1-c")).startswith("us-central1-c/")


def test_call_errors_are_classified(fake: FakeCompute) -> None:
    provider = _provider(fake)
    with pytest.raises(ProviderError) as err:
        _create(provider, "node-bogus", offer=_offer(itype="bogus-type"))
    assert err.value.kind is ProviderErrorKind.INVALID and "machineType" in err.value.message
    with pytest.raises(ProviderError) as err:
        _create(provider, "node-nozone", offer=_offer(zone="mars-north1-a"))
    assert err.value.kind is ProviderErrorKind.INVALID
    with pytest.raises(ProviderError) as err:
        _create(provider, "node-region-only", offer=Offer("gcp", "us-central1", "", "e2-standard-2", 2, 8))
    assert err.value.kind is ProviderErrorKind.INVALID and "zone" in err.value.message
    fake.forbid()
    for call in (lambda: _create(provider, "node-denied"), provider.list_instances):
        with pytest.raises(ProviderError) as err:
            call()
        assert err.value.kind is ProviderErrorKind.AUTH and "403" in err.value.message


def test_terminate_is_idempotent_and_list_spans_zones(fake: FakeCompute) -> None:
    provider = _provider(fake)
    a = _create(provider, "node-za", offer=_offer(zone="us-central1-a"))
    b = _create(provider, "node-zb", offer=_offer(zone="europe-west4-b"))
    # A VM Styx did not create is never listed (so never reaped as a leak).
    api = provider._api()
    foreign = api.compute.Instance(
        name="someone-else", machine_type="zones/us-east1-b/machineTypes/e2-standard-2", labels={"team": "x"},
        disks=[api.compute.AttachedDisk(boot=True)], network_interfaces=[api.compute.NetworkInterface()],
    )  # fmt: skip
    api.instances.insert_unary(project=PROJECT, zone="us-east1-b", instance_resource=foreign)
    assert {i.instance_id: i.node_id for i in provider.list_instances()} == {a: "node-za", b: "node-zb"}
    provider.terminate(a)
    provider.terminate(a)
    assert [i.instance_id for i in provider.list_instances()] == [b]
    with pytest.raises(ProviderError) as err:
        provider.terminate("not-an-id")
    assert err.value.kind is ProviderErrorKind.INVALID


def test_stop_and_start(fake: FakeCompute) -> None:
    provider = _provider(fake)
    iid = _create(provider, "node-power")
    provider.stop(iid)
    assert fake.live()[iid]["status"] == "TERMINATED"  # GCE's word for a stopped VM
    (listed,) = provider.list_instances()
    assert listed.status is InstanceStatus.PENDING  # still exists (disk billed): not gone
    provider.start(iid)
    assert fake.live()[iid]["status"] == "RUNNING"


def test_check_reports_what_is_missing(fake: FakeCompute, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _provider(fake).check().enabled
    no_project = GcpProvider(GcpSettings.from_env(_env(fake, STYX_GCP_PROJECT="")))
    status = no_project.check()
    assert not status.enabled and "project" in status.reason and "STYX_GCP_PROJECT" in status.hint
    with pytest.raises(Exception, match="only allowed against an endpoint override"):
        GcpSettings.from_env({"STYX_GCP_PROJECT": "p", "STYX_GCP_ANONYMOUS": "1"})
    monkeypatch.delenv("STYX_GCP_COMPUTE_ENDPOINT", raising=False)
    monkeypatch.setenv("STYX_GCP_ANONYMOUS", "1")
    status = GcpProvider().check()
    assert not status.enabled and "STYX_GCP_ANONYMOUS" in status.reason
    monkeypatch.delenv("STYX_GCP_ANONYMOUS")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake.endpoint.replace("http://", "/nonexistent/")))
    status = GcpProvider().check()
    assert not status.enabled and "credentials" in status.reason and "gcloud auth" in status.hint
    with pytest.raises(ProviderError) as err:
        GcpProvider().list_instances()
    assert err.value.kind is ProviderErrorKind.AUTH
    monkeypatch.setitem(sys.modules, "google.cloud.compute_v1", None)  # as if not installed
    status = GcpProvider().check()
    assert not status.enabled and status.hint == "pip install 'styx[gcp]'"


def test_plugin_loads_without_importing_the_sdk(fake: FakeCompute) -> None:
    """Loading the plugin through its entry point and check() stay clear of compute_v1 (~2.5 s)."""
    code = (
        "import sys\n"
        "from styx.provisioner.plugins import collect_providers, make_plugin_manager\n"
        "gcp = collect_providers(make_plugin_manager())['gcp']\n"
        "status = gcp.check()\n"
        "assert status.enabled, status\n"
        "assert 'google.cloud.compute_v1' not in sys.modules, 'compute_v1 imported at load/check'\n"
        "assert gcp.list_instances() == []\n"
        "assert 'google.cloud.compute_v1' in sys.modules\n"
    )
    env = {**os.environ, **_env(fake)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_names_and_labels_follow_gce_rules() -> None:
    """Pure checks of the naming rules (no fake needed)."""
    name_ok = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
    for node_id in ("node-abc123", "Node_X.1", "9" * 63, "-.-"):
        name = naming.instance_name(node_id)
        assert re.match(name_ok, name), name
        assert naming.instance_name(node_id) == name  # deterministic
    assert naming.instance_name("node-abc123") == "styx-node-abc123"
    assert naming.instance_name("A") != naming.instance_name("a")  # hashing keeps them apart
    long_value = "x" * 100
    assert len(naming.label_value(long_value)) <= 63 and naming.label_value("ok-1_2") == "ok-1_2"
    labels = naming.instance_labels("n", "r", {f"k{i}": "v" for i in range(100)} | {"styx-managed": "no"})
    assert len(labels) == naming.MAX_LABELS and labels["styx-managed"] == "true"
    rid = naming.request_uuid("insert", "r")
    assert rid == naming.request_uuid("insert", "r") != naming.request_uuid("insert", "s")
    assert naming.parse_instance_id("us-central1-a/styx-n") == ("us-central1-a", "styx-n")
    assert naming.parse_instance_id("i-0123") is None
