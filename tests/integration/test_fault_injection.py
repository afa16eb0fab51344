"""kill -9 of the broker or the provisioner at each instrumented point of provisioning.

Real processes on PostgreSQL, the AWS plugin's boto3 against a moto EC2 server. The
victim starts with ``STYX_CRASH_AT`` naming one point (``styx.common.faults``): it
SIGKILLs itself the first time it gets there, and is restarted without it. Meanwhile the
test launches three one-node clusters (retrying calls that hit the dead process, as any
client would) and later tears them down. Checked: every cluster holds exactly one node,
whose instance exists exactly once; nothing was created twice (RunInstances calls and
instances ever made, terminated ones included); and after ``down`` and one reconcile no
Styx instance is left running.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from fakes.aws_moto import shared_moto
from fakes.aws_stack import AwsStack, aws_offer, make_stack, tags_of
from helpers import wait_until
from styx.v1 import broker_pb2, common_pb2

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CLUSTERS = ("c0", "c1", "c2")
# Points reached only by tearing down; the others are reached while launching or
# reconciling, and the victim's death is awaited before the launch is checked.
DOWN_POINTS = {"broker.terminate", "provisioner.terminate"}
# (victim, point, what the scenario does to reach it)
POINTS = [
    ("broker", "broker.before_intent_commit", ""),
    ("broker", "broker.after_intent_commit", ""),
    ("broker", "broker.after_provision_sent", ""),
    ("broker", "broker.failover", "fail-zone"),
    ("broker", "broker.reconcile", ""),
    ("broker", "broker.terminate", ""),
    ("provisioner", "provisioner.after_create", ""),
    ("provisioner", "provisioner.reconcile", ""),
    ("provisioner", "provisioner.terminate", ""),
]


class Plane:
    """The stack plus the crash bookkeeping: who is armed, how often each died."""

    def __init__(self, stack: AwsStack, victim: str, point: str, mark: Path) -> None:
        self.stack = stack
        self.victim = victim
        self.point = point
        self.mark = mark
        self.deaths = 0

    def start(self, name: str, armed: bool = False) -> None:
        base = self.stack.env
        if armed:
            self.stack.env = {**base, "STYX_CRASH_AT": self.point, "STYX_CRASH_MARK": str(self.mark)}
        try:
            self.stack.start(name)
        finally:
            self.stack.env = base

    def revive(self) -> None:
        """Restart the victim if it died (it must have died of SIGKILL at the armed point)."""
        proc = self.stack.procs.get(self.victim)
        if proc is None or proc.proc.poll() is None:
            return
        assert proc.proc.returncode == -9, f"{self.victim} exited {proc.proc.returncode}:\n{proc.log_text()[-3000:]}"
        assert self.mark.read_text().split() == [self.point]
        self.deaths += 1
        del self.stack.procs[self.victim]
        self.start(self.victim)

    def call(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Call the broker until it answers (it or the provisioner may be dead right now)."""
        deadline = time.monotonic() + timeout
        while True:
            self.revive()
            try:
                return fn()
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # a process is restarting: poll, as a client retrying would


@pytest.fixture
def plane(request: pytest.FixtureRequest, tmp_path: Path, postgres_fresh_url: str) -> Iterator[Plane]:
    victim, point, scenario = request.param
    moto = shared_moto()
    stack = make_stack(
        tmp_path,
        moto,
        provisioner=["--reconcile-seconds", "0.3", "--leak-grace-seconds", "1", "--plane-id", "plane-faults"],
    )
    stack.db_urls = {"broker": postgres_fresh_url, "provisioner": postgres_fresh_url}
    p = Plane(stack, victim, point, tmp_path / "crash.mark")
    if scenario == "fail-zone":
        moto.fail_zone("us-east-1a")
    try:
        p.start("provisioner", armed=victim == "provisioner")
        p.start("broker", armed=victim == "broker")
        offers = [aws_offer("us-east-1a", 0.04), aws_offer("us-east-1b", 0.05)]
        p.call(lambda: stack.import_catalog(offers))
        yield p
    finally:
        stack.stop()


def _clusters(p: Plane) -> dict[str, broker_pb2.Cluster]:
    reply = p.call(lambda: p.stack.broker().ListClusters(broker_pb2.ListClustersRequest(include_down=True), timeout=10))
    return {c.name: c for c in reply.clusters}


def _launch(p: Plane) -> None:
    for name in CLUSTERS:
        request = broker_pb2.CreateClusterRequest(
            request_id=str(uuid.uuid4()),
            name=name,
            resources=common_pb2.ResourceRequest(cpus=2, memory_gib=4, infra="aws"),
            num_nodes=1,
        )
        p.call(lambda r=request: p.stack.broker().CreateCluster(r, timeout=30))


def _settled(p: Plane) -> bool:
    p.revive()
    clusters = _clusters(p)
    running = {tags_of(i)["styx-node-id"] for i in p.stack.moto.styx_instances(states=["pending", "running"])}
    claimed = {n for c in clusters.values() for n in c.node_ids if n in running}
    return len(running) == len(CLUSTERS) and claimed == running


@pytest.mark.parametrize("plane", POINTS, indirect=True, ids=[p[1] for p in POINTS])
def test_kill9_at_each_point_leaves_one_instance_per_cluster_and_none_after_down(plane: Plane) -> None:
    p, moto = plane, plane.stack.moto
    _launch(p)
    if p.point not in DOWN_POINTS:
        wait_until(lambda: (p.revive(), p.deaths)[1], timeout=60, message=f"{p.victim} to reach {p.point}")
    wait_until(lambda: _settled(p), timeout=90, message="every cluster to hold one running instance")
    clusters = _clusters(p)
    running = {tags_of(i)["styx-node-id"] for i in moto.styx_instances(states=["pending", "running"])}
    for name in CLUSTERS:
        live = [n for n in clusters[name].node_ids if n in running]
        assert len(live) == 1, f"cluster {name}: {list(clusters[name].node_ids)} vs running {sorted(running)}"
    ever = moto.styx_instances(states=["pending", "running", "stopping", "stopped", "shutting-down", "terminated"])
    assert len(ever) == len(CLUSTERS), "an instance was created twice"

    for name in CLUSTERS:
        request = broker_pb2.DownClusterRequest(request_id=str(uuid.uuid4()), name=name)
        p.call(lambda r=request: p.stack.broker().DownCluster(r, timeout=30))
    wait_until(
        lambda: (p.revive(), not moto.styx_instances())[1],
        timeout=60,
        message="no Styx instance left after down and a reconcile",
    )
    if p.point in DOWN_POINTS:
        wait_until(lambda: (p.revive(), p.deaths)[1], timeout=60, message=f"{p.victim} to reach {p.point}")
    assert all(c.state == broker_pb2.CLUSTER_STATE_DOWN for c in _clusters(p).values())
    assert p.deaths == 1, f"{p.point} was never reached (the victim died {p.deaths} times)"
