"""The gcp provider inside the real Styx services (scheduler, broker, provisioner as
processes on loopback) against tests/fakes/gcp_compute.py, a local FAKE that speaks the
documented Compute Engine REST wire format: no runnable Compute Engine exists outside
Google, so the provisioner's real google-cloud-compute client talks to the fake (through
STYX_GCP_COMPUTE_ENDPOINT, with anonymous credentials, which only that override allows).

The VMs' boot is played by ``BootPlayer``: for each RUNNING VM it starts, locally, the
agent that the VM's startup script would start, with the settings parsed from that script.

Covered: `sky launch --infra gcp/us-central1 task.yaml` runs on a tagged VM, and terminating
its node leaves zero Styx VMs; a capacity error in one zone
fails over to the next zone; kill -9 of the provisioner while its insert is in flight
leaves no duplicate and, after a reconcile, no leak; a VM deleted behind Styx's back gets
its task re-queued onto a new VM.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fakes.gcp_compute import BootPlayer, FakeCompute
from helpers import ServiceStack, free_port, run_sky, wait_until
from providers.harness import LAUNCH
from styx.common.offers import offer_from_pb
from styx.provisioner.provider import PLANE_LABEL
from styx.v1 import (
    broker_pb2,
    common_pb2,
    provisioner_pb2,
    scheduler_pb2,
)
from styx_plugins.gcp.config import GcpSettings
from styx_plugins.gcp.provider import GcpProvider

pytest.importorskip("google.cloud.compute_v1")

PROJECT = "styx-it"
REGION = "us-central1"
ZONES = ("us-central1-a", "us-central1-b")
TERMINAL = {common_pb2.TASK_STATE_SUCCEEDED, common_pb2.TASK_STATE_FAILED, common_pb2.TASK_STATE_CANCELLED}

PLANE = "plane-gcp-test"


@dataclass(kw_only=True)
class GcpStack(ServiceStack):
    """Broker, provisioner and scheduler processes pointed at one fake Compute Engine."""

    fake: FakeCompute
    player: BootPlayer | None = None

    def import_catalog(self) -> None:
        """Two zones of one region, zone a cheaper, so the ranked order is known."""
        offers = [
            common_pb2.Offer(provider="gcp", region=REGION, zone=zone, instance_type="e2-standard-2", cpus=2,
                             memory_gib=8, price_per_hour=0.05 + 0.01 * i, spot_price_per_hour=0.02 + 0.01 * i)
            for i, zone in enumerate(ZONES)
        ]  # fmt: skip
        request = broker_pb2.ImportCatalogRequest(request_id=str(uuid.uuid4()), offers=offers)
        assert self.broker().ImportCatalog(request, timeout=30).count == len(offers)

    def boot_vms(self) -> BootPlayer:
        agent_env = {k: v for k, v in self.env.items() if k != "STYX_TOKEN"}
        self.player = BootPlayer(self.fake, self.root / "vms", cpus=2, memory_gib=8, env=agent_env).start()
        return self.player

    def submit(self, run: str) -> str:
        spec = common_pb2.TaskSpec(
            name="t", run=run, resources=common_pb2.ResourceRequest(cpus=1, cpus_at_least=True, infra=f"gcp/{REGION}")
        )
        request = scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=scheduler_pb2.JobSpec(tasks=[spec]))
        return self.scheduler().SubmitJob(request, timeout=60).job_id

    def task(self, job_id: str) -> common_pb2.Task:
        tasks = self.scheduler().ListTasks(scheduler_pb2.ListTasksRequest(job_id=job_id), timeout=30).tasks
        return tasks[0]

    def wait_task(self, job_id: str, timeout: float = 60) -> common_pb2.Task:
        wait_until(lambda: self.task(job_id).state in TERMINAL, timeout=timeout, interval=0.2, message="task ends")
        return self.task(job_id)

    def styx_vms(self) -> dict[str, dict]:
        return {k: v for k, v in self.fake.live().items() if (v.get("labels") or {}).get("styx-managed") == "true"}

    def terminate_node(self, node_id: str) -> None:
        stub = self.provisioner()
        op = stub.Terminate(provisioner_pb2.TerminateRequest(request_id=str(uuid.uuid4()), node_id=node_id), timeout=30)
        done = wait_until(
            lambda: (o := stub.GetOperation(provisioner_pb2.GetOperationRequest(operation_id=op.operation_id),
                                            timeout=30)).state in (provisioner_pb2.OPERATION_STATE_DONE,
                                                                  provisioner_pb2.OPERATION_STATE_FAILED) and o,
            timeout=60,
            message="terminate operation",
        )  # fmt: skip
        assert done.state == provisioner_pb2.OPERATION_STATE_DONE, done

    def stop(self) -> None:
        if self.player is not None:
            self.player.stop()
        self.stop_services()
        self.fake.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[GcpStack]:
    fake = FakeCompute(op_delay_s=0.1).start()
    token = secrets.token_hex(16)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STYX_GCP_", "GOOGLE_"))},
        "STYX_HOME": str(home),
        "STYX_TOKEN": token,
        "STYX_LOG_LEVEL": "INFO",
        "STYX_GCP_PROJECT": PROJECT,
        "STYX_GCP_COMPUTE_ENDPOINT": fake.endpoint,
        "STYX_GCP_ANONYMOUS": "1",
        # The local provider stays loaded but gets no work: every task here asks for infra gcp/...
        "STYX_LOCAL_MAX_NODES": "0",
    }
    ports = {n: free_port() for n in ("scheduler", "broker", "provisioner")}
    flags = {
        "broker": ["--lease-seconds", "4"],
        "provisioner": ["--reconcile-seconds", "0.5", "--leak-grace-seconds", "1", "--plane-id", PLANE],
    }
    s = GcpStack(root=tmp_path, fake=fake, token=token, env=env, ports=ports, flags=flags, start_timeout=60)
    try:
        for name in ("provisioner", "broker", "scheduler"):
            s.start(name)
        s.import_catalog()
        yield s
    finally:
        s.stop()


def _node_of(vm: dict) -> str:
    return str(vm["labels"]["styx-node-id"])


def test_sky_launch_runs_on_a_tagged_vm_and_terminate_leaves_none(stack: GcpStack, tmp_path: Path) -> None:
    player = stack.boot_vms()
    task_file = tmp_path / "task.yaml"
    task_file.write_text("name: hello\nresources:\n  cpus: 1+\nrun: echo hello from gcp\n")
    proc = run_sky(
        ["launch", "--infra", f"gcp/{REGION}", str(task_file)],
        tmp_path / "cli-home",
        timeout=120,
        STYX_ENDPOINT=stack.endpoint("scheduler"),
        STYX_BROKER_ENDPOINT=stack.endpoint("broker"),
        STYX_PROVISIONER_ENDPOINT=stack.endpoint("provisioner"),
        STYX_TOKEN=stack.token,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hello from gcp" in proc.stdout
    (task,) = stack.scheduler().ListTasks(scheduler_pb2.ListTasksRequest(), timeout=30).tasks
    assert task.state == common_pb2.TASK_STATE_SUCCEEDED, task.failure_reason
    ((iid, vm),) = stack.styx_vms().items()
    assert iid.startswith(f"{ZONES[0]}/styx-") and iid in player.booted
    assert vm["labels"]["styx-node-id"] == task.node_id and vm["labels"]["styx-request-id"]
    assert vm["scheduling"]["provisioningModel"] == "STANDARD"
    assert vm["machineType"].endswith("/zones/us-central1-a/machineTypes/e2-standard-2")
    stack.terminate_node(task.node_id)
    assert stack.styx_vms() == {}
    instances = stack.provisioner().ListInstances(provisioner_pb2.ListInstancesRequest(), timeout=30).instances
    assert [i.node_id for i in instances] == []


def test_capacity_error_in_one_zone_fails_over_to_the_next(stack: GcpStack) -> None:
    stack.fake.fail_zone(ZONES[0])
    stack.boot_vms()
    job = stack.submit("echo failover")
    task = stack.wait_task(job, timeout=90)
    assert task.state == common_pb2.TASK_STATE_SUCCEEDED, task.failure_reason
    assert [iid.split("/")[0] for iid in stack.styx_vms()] == [ZONES[1]]
    attempts = stack.broker().ListProvisioningAttempts(broker_pb2.ListProvisioningAttemptsRequest(), timeout=30)
    failed = [a for a in attempts.attempts if a.offer.zone == ZONES[0]]
    assert failed and "ZONE_RESOURCE_POOL_EXHAUSTED" in failed[0].error
    assert failed[0].error_kind == provisioner_pb2.PROVIDER_ERROR_KIND_CAPACITY


def test_kill9_of_the_provisioner_mid_create_leaves_no_duplicate_and_no_leak(stack: GcpStack) -> None:
    stack.fake.hold_inserts()
    job = stack.submit("echo after the crash")
    wait_until(lambda: stack.fake.inserts >= 1, timeout=60, message="the insert reaches the cloud")
    stack.kill9("provisioner")  # the VM exists; the provisioner never heard back
    stack.fake.release_inserts()
    stack.start("provisioner")  # resumes the operation: finds the VM by its request-id label
    stack.boot_vms()
    task = stack.wait_task(job, timeout=90)
    assert task.state == common_pb2.TASK_STATE_SUCCEEDED, task.failure_reason
    # The agent may register before the resumed operation commits: wait for the record.
    listing = provisioner_pb2.ListInstancesRequest()
    instances = wait_until(
        lambda: [i for i in stack.provisioner().ListInstances(listing, timeout=30).instances if i.instance_id],
        timeout=30,
        message="the resumed create records the instance",
    )
    vms = stack.styx_vms()
    assert len(vms) == 1 and _node_of(next(iter(vms.values()))) == task.node_id
    assert [(i.node_id, i.instance_id) for i in instances] == [(task.node_id, next(iter(vms)))]
    assert stack.fake.inserts == 1  # the resumed create found the VM by label; it did not insert again

    # A VM of this plane that no record owns (e.g. its record was lost) is a leak: reconcile
    # deletes it after the grace period, and leaves the owned one and another plane's alone.
    provider = GcpProvider(GcpSettings.from_env(stack.env), poll_s=0.05)
    offer = stack.provisioner().ListInstances(provisioner_pb2.ListInstancesRequest(), timeout=30).instances[0].offer
    leaked, theirs = (
        provider.create(node_id=node, offer=offer_from_pb(offer), spot=False, labels={PLANE_LABEL: owner},
                        request_id=f"req-{node}", agent_launch=LAUNCH)
        for node, owner in (("node-leaked", PLANE), ("node-theirs", "plane-someone-else"))
    )  # fmt: skip
    wait_until(lambda: leaked not in stack.styx_vms(), timeout=30, message="the leaked VM is deleted")
    time.sleep(1.5)  # more passes past the grace period: the other plane's VM stays
    assert sorted(stack.styx_vms()) == sorted([i.instance_id for i in instances] + [theirs])
    provider.terminate(theirs)


def test_vm_deleted_behind_styx_back_requeues_its_task_on_a_new_vm(stack: GcpStack, tmp_path: Path) -> None:
    player = stack.boot_vms()
    marker = tmp_path / "starts.txt"
    job = stack.submit(f'echo "$STYX_TASK_ID" >> {marker}; sleep 2')
    wait_until(lambda: stack.task(job).state == common_pb2.TASK_STATE_RUNNING, timeout=60, message="task runs")
    first = stack.task(job)
    ((iid, _),) = stack.styx_vms().items()
    zone, name = iid.split("/")
    stack.fake.vanish(zone, name)  # deleted in the console; its agent dies with it
    task = stack.wait_task(job, timeout=120)
    assert task.state == common_pb2.TASK_STATE_SUCCEEDED, task.failure_reason
    assert task.attempt > first.attempt and task.node_id != first.node_id
    assert len(player.booted) == 2 and iid not in stack.styx_vms()
    assert [_node_of(vm) for vm in stack.styx_vms().values()] == [task.node_id]
