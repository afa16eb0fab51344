"""kill -9 of the provisioner between EC2's RunInstances and the provisioner's commit.

The provisioner runs as a process; its boto3 talks to a moto server (ThreadedMotoServer,
server mode) through the shim of tests/fakes/aws_moto.py, which holds the RunInstances
response after moto created the instance. The provisioner is killed while it waits, then
restarted on the same store: it resumes the operation, finds the instance by its
request-id tag (the shim counts RunInstances calls: no second one), and one reconcile pass
later no Styx instance is left that the store does not own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from fakes.aws_moto import MotoEc2, shared_moto
from fakes.aws_stack import AwsStack, aws_offer, make_stack, tags_of
from helpers import wait_until
from styx.v1 import provisioner_pb2

DONE = provisioner_pb2.OPERATION_STATE_DONE
PLANE = "plane-aws-crash"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[AwsStack]:
    moto = shared_moto()
    stack = make_stack(
        tmp_path, moto, provisioner=["--reconcile-seconds", "0.3", "--leak-grace-seconds", "1", "--plane-id", PLANE]
    )
    try:
        yield stack
    finally:
        stack.stop()


def test_kill9_between_run_instances_and_commit_leaves_one_instance_and_no_leak(stack: AwsStack) -> None:
    moto: MotoEc2 = stack.moto
    stack.start("provisioner")
    hold = moto.hold_next_run_instances()
    request = provisioner_pb2.ProvisionRequest(
        request_id=f"req-{uuid.uuid4()}", node_id="node-crash1", offer=aws_offer("us-east-1b", 0.05)
    )
    op = stack.provisioner().Provision(request, timeout=30)
    assert hold.held.wait(30), "RunInstances never reached the shim"
    created = moto.styx_instances()
    assert len(created) == 1 and tags_of(created[0])["styx-node-id"] == "node-crash1"
    stack.kill9("provisioner")
    hold.release()

    def styx_instance(node_id: str, plane: str) -> str:
        tags = {"styx-managed": "true", "styx-node-id": node_id, "styx-request-id": f"req-{node_id}"}
        return moto.client().run_instances(
            ImageId="ami-0123456789abcdef0",
            InstanceType="t3.medium",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in {**tags, "styx-plane": plane}.items()],
                }
            ],
        )["Instances"][0]["InstanceId"]

    # A stray instance of this plane that no record owns (e.g. its store was lost), and one
    # of another control plane sharing the account, which is not ours to reap.
    stray = styx_instance("node-stray", PLANE)
    theirs = styx_instance("node-theirs", "plane-someone-else")

    stack.start("provisioner")
    stub = stack.provisioner()
    final = wait_until(
        lambda: (
            (
                o := stub.GetOperation(provisioner_pb2.GetOperationRequest(operation_id=op.operation_id), timeout=10)
            ).state
            == DONE
            and o
        ),
        timeout=30,
        interval=0.2,
        message="the resumed provision to finish",
    )
    assert final.instance.instance_id == created[0]["InstanceId"]
    assert len(moto.run_instances_calls) == 1, "the resumed create called RunInstances again"

    # After the grace period, reconcile terminates the stray one and keeps the owned one
    # and the other plane's.
    wait_until(
        lambda: {i["InstanceId"] for i in moto.styx_instances()} == {created[0]["InstanceId"], theirs},
        timeout=20,
        interval=0.2,
        message="the stray instance to be terminated",
    )
    assert stray not in {i["InstanceId"] for i in moto.styx_instances()}
    time.sleep(1.5)  # several more passes past the grace period: the other plane's stays
    assert theirs in {i["InstanceId"] for i in moto.styx_instances()}
    moto.client().terminate_instances(InstanceIds=[theirs])
    instances = stub.ListInstances(provisioner_pb2.ListInstancesRequest(provider="aws"), timeout=10).instances
    assert [(i.node_id, i.instance_id) for i in instances] == [("node-crash1", created[0]["InstanceId"])]
    assert instances[0].state == provisioner_pb2.INSTANCE_STATE_RUNNING

    stack.terminate_node("node-crash1")
    assert moto.styx_instances() == []
