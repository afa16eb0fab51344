"""The Azure provider inside the real Styx services (broker, provisioner, scheduler as
processes on loopback) against tests/fakes/azure_compute.py, a fake speaking the documented
ARM REST wire format: no runnable Azure Resource Manager exists, so the real
azure-mgmt-compute client in the provisioner talks HTTP to the fake instead.

The fake's store is the ground truth ("what Azure holds"). ``AgentBooter`` plays each VM's
first boot: it starts ``python -m styx.agent`` with the settings parsed from the VM's
customData, as cloud-init would, and kills it when the VM vanishes.

Covered: capacity error in one zone -> the broker provisions in the next zone; kill -9 of
the provisioner between the create PUT and its commit -> no duplicate VM, nothing leaked
after reconcile (and a Styx VM no record owns is deleted); a VM deleted behind Styx's back
-> its task is re-queued and completes on a new VM; ``sky launch --infra azure/eastus``
end to end, then Terminate leaves zero Styx VMs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fakes.azure_compute import AgentBooter, FakeAzureCompute
from helpers import ServiceStack, free_port, sky_command, wait_until
from styx.provisioner.bootstrap import parse_startup_env
from styx.v1 import (
    broker_pb2,
    common_pb2,
    provisioner_pb2,
    scheduler_pb2,
)

pytest.importorskip("azure.mgmt.compute", reason="pip install 'styx[azure]'")

SIZE = "Standard_D2s_v5"
CPUS, MEMORY = 2.0, 8.0
TERMINAL = {common_pb2.TASK_STATE_SUCCEEDED, common_pb2.TASK_STATE_FAILED, common_pb2.TASK_STATE_CANCELLED}

PLANE = "plane-azure-test"


def azure_offer(zone: str, price: float) -> common_pb2.Offer:
    """A catalog entry for eastus/<zone>."""
    return common_pb2.Offer(
        provider="azure",
        region="eastus",
        zone=zone,
        instance_type=SIZE,
        cpus=CPUS,
        memory_gib=MEMORY,
        price_per_hour=price,
        spot_price_per_hour=price / 5,
    )


@dataclass(kw_only=True)
class Plane(ServiceStack):
    """The three services, the fake ARM endpoint and the VM-boot player."""

    fake: FakeAzureCompute
    booter: AgentBooter

    def import_catalog(self, *offers: common_pb2.Offer) -> None:
        request = broker_pb2.ImportCatalogRequest(request_id=str(uuid.uuid4()), offers=list(offers))
        self.broker().ImportCatalog(request, timeout=30)

    def submit(self, run: str) -> str:
        spec = common_pb2.TaskSpec(
            name="t", run=run, resources=common_pb2.ResourceRequest(cpus=1, cpus_at_least=True, infra="azure/eastus")
        )
        request = scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=scheduler_pb2.JobSpec(tasks=[spec]))
        return self.scheduler().SubmitJob(request, timeout=30).tasks[0].task_id

    def task(self, task_id: str) -> common_pb2.Task:
        return self.scheduler().GetTask(scheduler_pb2.GetTaskRequest(task_id=task_id), timeout=10)

    def wait_task(self, task_id: str, timeout: float = 60) -> common_pb2.Task:
        wait_until(lambda: self.task(task_id).state in TERMINAL, timeout=timeout, interval=0.2, message="task done")
        return self.task(task_id)

    def terminate_all(self) -> None:
        """Terminate every instance through the Provisioner RPC and wait for the operations."""
        stub = self.provisioner()
        for inst in stub.ListInstances(provisioner_pb2.ListInstancesRequest(provider="azure"), timeout=10).instances:
            request = provisioner_pb2.TerminateRequest(request_id=str(uuid.uuid4()), node_id=inst.node_id)
            op = stub.Terminate(request, timeout=10)
            wait_until(
                lambda op=op: (
                    stub.GetOperation(
                        provisioner_pb2.GetOperationRequest(operation_id=op.operation_id), timeout=10
                    ).state
                    == provisioner_pb2.OPERATION_STATE_DONE
                ),
                timeout=30,
                message="terminate done",
            )

    def stop(self) -> None:
        self.booter.close()
        self.stop_services()
        self.fake.close()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    fake = FakeAzureCompute(op_seconds=0.5).start()
    token = secrets.token_hex(16)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, **fake.env(), "STYX_HOME": str(home), "STYX_TOKEN": token, "STYX_LOG_LEVEL": "INFO"}
    ports = {n: free_port() for n in ("broker", "provisioner", "scheduler")}
    booter = AgentBooter(fake, tmp_path / "vms", capacity=lambda size: (CPUS, MEMORY)).start()
    flags = {
        "scheduler": ["--dispatch-lease-seconds", "3"],
        "broker": ["--lease-seconds", "4"],
        "provisioner": ["--reconcile-seconds", "0.5", "--leak-grace-seconds", "1", "--plane-id", PLANE],
    }
    p = Plane(root=tmp_path, fake=fake, token=token, env=env, ports=ports, booter=booter, flags=flags)
    try:
        yield p
    finally:
        p.stop()


def _start_all(plane: Plane) -> None:
    for name in ("broker", "provisioner", "scheduler"):
        plane.start(name)
    plane.import_catalog(azure_offer("1", 0.090), azure_offer("2", 0.095))


def test_capacity_in_one_zone_fails_over_to_the_next(plane: Plane) -> None:
    plane.fake.fail_creates("ZonalAllocationFailed", "Allocation failed in zone 1", zone="1")
    _start_all(plane)
    task = plane.wait_task(plane.submit("echo ok"))
    assert task.state == common_pb2.TASK_STATE_SUCCEEDED, task.failure_reason
    attempts = plane.broker().ListProvisioningAttempts(broker_pb2.ListProvisioningAttemptsRequest(), timeout=10)
    tried = [(a.offer.zone, a.error_kind) for a in reversed(attempts.attempts)]
    assert tried[0] == ("1", provisioner_pb2.PROVIDER_ERROR_KIND_CAPACITY), tried
    assert tried[1][0] == "2"
    # The failed zone-1 VM (ARM keeps it in state Failed) was deleted; only zone 2 runs.
    assert [vm.zones for vm in plane.fake.styx_vms()] == [["2"]]
    plane.terminate_all()
    assert plane.fake.styx_vms() == []


def test_kill9_between_create_and_commit_leaves_one_vm_and_no_leak(plane: Plane) -> None:
    plane.start("broker")
    plane.start("provisioner")
    plane.fake.hold_creates()
    request = provisioner_pb2.ProvisionRequest(
        request_id="prov-kill9", node_id="node-kill9", offer=azure_offer("1", 0.09)
    )
    op = plane.provisioner().Provision(request, timeout=10)
    wait_until(lambda: plane.fake.held == 1, timeout=20, message="the create PUT to be held")
    plane.kill9("provisioner")  # Azure has the VM; the provisioner never heard back
    plane.fake.release_creates()
    plane.start("provisioner")  # resumes the unfinished operation
    stub = plane.provisioner()
    get = provisioner_pb2.GetOperationRequest(operation_id=op.operation_id)
    done = wait_until(
        lambda: (o := stub.GetOperation(get, timeout=10)).state == provisioner_pb2.OPERATION_STATE_DONE and o,
        timeout=30,
        message="the resumed operation",
    )
    vms = plane.fake.styx_vms()
    assert [vm.name for vm in vms] == ["styx-node-kill9"]
    assert done.instance.instance_id == vms[0].id
    assert plane.fake.put_count() == 1, "the resumed create must find the VM, not PUT again"
    # A VM of this plane that no record owns (e.g. its store was lost) is a leak: reconcile
    # deletes it. Another control plane's VM in the same resource group is left alone.
    from styx.common.offers import offer_from_pb
    from styx.provisioner.provider import PLANE_LABEL, AgentLaunch
    from styx_plugins.azure.provider import AzureProvider

    def create(node_id: str, owner: str) -> str:
        return AzureProvider(env=plane.fake.env()).create(
            node_id=node_id,
            offer=offer_from_pb(azure_offer("2", 0.09)),
            spot=False,
            labels={PLANE_LABEL: owner},
            request_id=f"req-{node_id}",
            agent_launch=AgentLaunch("127.0.0.1:1", "127.0.0.1:2", "x"),
        )

    create("node-orphan", PLANE)
    theirs = create("node-theirs", "plane-someone-else")
    wait_until(
        lambda: sorted(vm.name for vm in plane.fake.styx_vms()) == ["styx-node-kill9", "styx-node-theirs"],
        timeout=30,
        message="the orphan VM to be reconciled away",
    )
    time.sleep(1.5)  # more passes past the grace period: the other plane's VM stays
    assert "styx-node-theirs" in {vm.name for vm in plane.fake.styx_vms()}
    AzureProvider(env=plane.fake.env()).terminate(theirs)
    plane.terminate_all()
    assert plane.fake.styx_vms() == []


def test_vm_deleted_behind_our_back_requeues_the_task(plane: Plane) -> None:
    _start_all(plane)
    marker = plane.root / "first-run"
    # The first attempt waits long enough to be interrupted; a re-run finishes at once.
    task_id = plane.submit(f"if [ -e {marker} ]; then echo second; else touch {marker}; sleep 60; fi")
    # Stop at RUNNING or at an end: had the first attempt ended early (its node fenced or
    # lost under load), the re-run finishes at once and RUNNING would never be seen again.
    try:
        first = wait_until(
            lambda: (task := plane.task(task_id)).state in TERMINAL | {common_pb2.TASK_STATE_RUNNING} and task,
            timeout=60,
            message="running",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{plane.task(task_id)}\n{plane.diagnosis()}") from None
    assert first.state == common_pb2.TASK_STATE_RUNNING and first.attempt == 1, f"{first}\n{plane.diagnosis()}"
    first_node = first.node_id
    (vm,) = plane.fake.styx_vms()
    assert vm.tags["styx-node-id"] == first_node
    plane.fake.delete_behind_back(vm.name)
    task = plane.wait_task(task_id, timeout=90)
    assert task.state == common_pb2.TASK_STATE_SUCCEEDED, task.failure_reason
    assert task.attempt > 1 and task.node_id != first_node
    assert [v.tags["styx-node-id"] for v in plane.fake.styx_vms()] == [task.node_id]
    plane.terminate_all()
    assert plane.fake.styx_vms() == []


def test_sky_launch_end_to_end_then_terminate_leaves_nothing(plane: Plane, tmp_path: Path) -> None:
    _start_all(plane)
    task_file = tmp_path / "task.yaml"
    task_file.write_text("name: hello\nresources:\n  cpus: 1+\nrun: echo hello-from-azure\n")
    env = {k: v for k, v in plane.env.items() if k not in ("STYX_TOKEN_FILE",)}
    env.update(
        STYX_ENDPOINT=plane.endpoint("scheduler"),
        STYX_BROKER_ENDPOINT=plane.endpoint("broker"),
        STYX_PROVISIONER_ENDPOINT=plane.endpoint("provisioner"),
        STYX_HOME=str(tmp_path / "cli-home"),
    )
    proc = subprocess.run(
        [*sky_command(), "launch", "--infra", "azure/eastus", str(task_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hello-from-azure" in proc.stdout
    (vm,) = plane.fake.styx_vms()
    assert vm.tags["styx-managed"] == "true" and vm.tags["styx-request-id"]
    assert vm.body["location"] == "eastus" and vm.zones == ["1"]
    boot = parse_startup_env(vm.custom_data)
    assert boot["STYX_NODE_ID"] == vm.tags["styx-node-id"]
    assert boot["STYX_SCHEDULER_ENDPOINT"] == plane.endpoint("scheduler")
    assert plane.token not in vm.custom_data  # a node-scoped token, never the shared one
    plane.terminate_all()
    assert plane.fake.styx_vms() == []
    assert plane.fake.vms() == []  # nothing of Styx's left in the fake's ground truth
