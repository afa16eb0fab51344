"""The AWS plugin inside a real control plane: broker, provisioner and scheduler run as
processes; the provisioner's boto3 talks to a moto server (ThreadedMotoServer, server mode)
through a small HTTP shim (tests/fakes/aws_moto.py) that can fail RunInstances in a zone.

The VMs are played: a test reads an instance's user data from moto and starts
``python -m styx.agent`` locally with the environment the boot script carries.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from fakes.aws_moto import MotoEc2, shared_moto
from fakes.aws_stack import AwsStack, aws_offer, make_stack, tags_of
from helpers import run_sky, wait_until
from styx.v1 import broker_pb2, common_pb2

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
INFRA = "aws/us-east-1"


@pytest.fixture(scope="module")
def moto() -> MotoEc2:
    return shared_moto()


@pytest.fixture
def stack(tmp_path: Path, moto: MotoEc2) -> Iterator[AwsStack]:
    # A long lease: a node must be noticed gone through the provisioner's reconcile (which
    # deregisters it), not through its missed heartbeats.
    stack = make_stack(tmp_path, moto, broker=["--lease-seconds", "60"], provisioner=["--reconcile-seconds", "0.5"])
    try:
        stack.start("broker", "provisioner", "scheduler")
        # Cheapest first: 1a, then 1b, then 1c.
        stack.import_catalog([aws_offer(zone, 0.01 * (i + 1)) for i, zone in enumerate(ZONES)])
        yield stack
    finally:
        stack.stop()


def aws_task(name: str, run: str) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(name=name, run=run, resources=common_pb2.ResourceRequest(cpus=2, infra=INFRA))


def one_instance(moto: MotoEc2, exclude: frozenset[str] = frozenset()) -> dict:
    """Wait for exactly one new live Styx instance (not in ``exclude``) and return it."""

    def found() -> list[dict]:
        return [i for i in moto.styx_instances(states=["pending", "running"]) if i["InstanceId"] not in exclude]

    instances = wait_until(found, timeout=30, interval=0.2, message="a Styx instance in moto")
    assert len(instances) == 1, [i["InstanceId"] for i in instances]
    return instances[0]


def wait_state(stack: AwsStack, task_id: str, state: int, timeout: float = 30) -> common_pb2.Task:
    return wait_until(
        lambda: (t := stack.task(task_id)).state == state and t,
        timeout=timeout,
        interval=0.2,
        message=f"task {task_id} in state {common_pb2.TaskState.Name(state)}",
    )


def test_capacity_error_in_one_zone_provisions_in_the_next(stack: AwsStack, moto: MotoEc2) -> None:
    moto.fail_zone("us-east-1a")
    job = stack.submit(aws_task("ice", "echo placed"))
    task_id = job.tasks[0].task_id
    instance = one_instance(moto)
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1b"
    zones_tried = [c.get("Placement.AvailabilityZone") for c in moto.run_instances_calls]
    assert zones_tried == ["us-east-1a", "us-east-1b"]
    attempts = (
        stack.broker()
        .ListProvisioningAttempts(broker_pb2.ListProvisioningAttemptsRequest(task_id=task_id), timeout=30)
        .attempts
    )
    by_zone = {a.offer.zone: a for a in attempts}
    assert by_zone["us-east-1a"].state == broker_pb2.PROVISIONING_ATTEMPT_STATE_FAILED
    assert by_zone["us-east-1a"].error_kind == 1  # PROVIDER_ERROR_KIND_CAPACITY
    assert "InsufficientInstanceCapacity" in by_zone["us-east-1a"].error
    assert "us-east-1c" not in by_zone
    # The node in 1b boots and runs the task.
    stack.play_boot(instance)
    task = wait_state(stack, task_id, common_pb2.TASK_STATE_SUCCEEDED)
    assert task.node_id == tags_of(instance)["styx-node-id"]
    stack.terminate_node(task.node_id)
    assert moto.styx_instances() == []


def test_instance_deleted_behind_styxs_back_requeues_its_task(stack: AwsStack, moto: MotoEc2, tmp_path: Path) -> None:
    mark = tmp_path / "first-attempt-ran"
    run = f"if [ -e {mark} ]; then echo second attempt; else touch {mark}; sleep 120; fi"
    job = stack.submit(aws_task("victim", run))
    task_id = job.tasks[0].task_id
    first = one_instance(moto)
    stack.play_boot(first)
    running = wait_state(stack, task_id, common_pb2.TASK_STATE_RUNNING)
    assert running.node_id == tags_of(first)["styx-node-id"]
    # Someone terminates the instance in the console: the VM and everything on it dies.
    moto.client().terminate_instances(InstanceIds=[first["InstanceId"]])
    stack.kill_vm(first["InstanceId"])
    # The provisioner's reconcile sees it gone and deregisters the node (well within the
    # 60 s lease), the task is re-queued, and the broker provisions a new instance.
    second = one_instance(moto, exclude=frozenset({first["InstanceId"]}))
    stack.play_boot(second)
    task = wait_state(stack, task_id, common_pb2.TASK_STATE_SUCCEEDED)
    assert task.attempt == 2
    assert task.node_id == tags_of(second)["styx-node-id"] != running.node_id
    stack.terminate_node(task.node_id)
    assert moto.styx_instances() == []


def test_reclaimed_spot_instance_is_relaunched_in_another_zone(stack: AwsStack, moto: MotoEc2, tmp_path: Path) -> None:
    mark = tmp_path / "first-attempt-ran"
    run = f"if [ -e {mark} ]; then echo second attempt; else touch {mark}; sleep 120; fi"
    spec = aws_task("spot-victim", run)
    spec.resources.use_spot = True
    job = stack.submit(spec)
    task_id = job.tasks[0].task_id
    first = one_instance(moto)
    assert first["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert first.get("InstanceLifecycle") == "spot"
    stack.play_boot(first)
    running = wait_state(stack, task_id, common_pb2.TASK_STATE_RUNNING)
    # AWS reclaims the spot instance: it is terminated and its VM dies.
    moto.client().terminate_instances(InstanceIds=[first["InstanceId"]])
    stack.kill_vm(first["InstanceId"])
    # The reconcile loop reports it lost; 1a's spot market cools; the relaunch goes to 1b.
    second = one_instance(moto, exclude=frozenset({first["InstanceId"]}))
    assert second["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert second.get("InstanceLifecycle") == "spot"
    stack.play_boot(second)
    task = wait_state(stack, task_id, common_pb2.TASK_STATE_SUCCEEDED)
    assert task.attempt == 2 and task.node_id != running.node_id
    attempts = (
        stack.broker()
        .ListProvisioningAttempts(broker_pb2.ListProvisioningAttemptsRequest(task_id=task_id), timeout=30)
        .attempts
    )
    lost = [a for a in attempts if a.state == broker_pb2.PROVISIONING_ATTEMPT_STATE_LOST]
    assert [a.offer.zone for a in lost] == ["us-east-1a"] and "spot instance reclaimed" in lost[0].error
    stack.terminate_node(task.node_id)
    assert moto.styx_instances() == []


def test_sky_launch_on_aws_end_to_end(stack: AwsStack, moto: MotoEc2, tmp_path: Path) -> None:
    task_file = tmp_path / "task.yaml"
    task_file.write_text(
        textwrap.dedent(
            """\
            name: hello-aws
            resources:
              cpus: 2
            run: echo "hello from $STYX_NODE_ID"
            """
        )
    )
    env = {
        "STYX_ENDPOINT": stack.endpoint("scheduler"),
        "STYX_BROKER_ENDPOINT": stack.endpoint("broker"),
        "STYX_PROVISIONER_ENDPOINT": stack.endpoint("provisioner"),
        "STYX_TOKEN": stack.token,
    }
    launched = run_sky(["launch", "--infra", INFRA, "-d", str(task_file)], tmp_path / "cli-home", **env)
    assert launched.returncode == 0, launched.stderr
    job_id, task_line = launched.stdout.split("\n")[:2]
    task_id = task_line.split()[0]
    assert re.fullmatch(r"j-[0-9a-f]+", job_id), launched.stdout

    instance = one_instance(moto)
    tags = tags_of(instance)
    node_id = tags["styx-node-id"]
    assert tags["styx-managed"] == "true" and tags["styx-request-id"] and tags["Name"] == f"styx-{node_id}"
    assert instance["InstanceType"] == "t3.medium"
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1a"
    assert instance["ImageId"] == "ami-0123456789abcdef0"
    script = moto.user_data(instance["InstanceId"])
    assert stack.token not in script  # the boot script carries a node token only
    stack.play_boot(instance)
    task = wait_state(stack, task_id, common_pb2.TASK_STATE_SUCCEEDED, timeout=40)
    assert task.node_id == node_id
    logs = run_sky(["logs", task_id], tmp_path / "cli-home", **env)
    assert logs.returncode == 0, logs.stderr
    assert f"hello from {node_id}" in logs.stdout
    check = run_sky(["check", "aws", "--json"], tmp_path / "cli-home", **env)
    assert check.returncode == 0, check.stderr
    assert '"enabled": true' in check.stdout, check.stdout
    op = stack.terminate_node(node_id)
    assert op.state == 3, op  # OPERATION_STATE_DONE
    assert moto.styx_instances() == []
    state = moto.client().describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"
