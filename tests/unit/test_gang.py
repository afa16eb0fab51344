"""Multi-node (gang) tasks: all-or-nothing placement in the broker, ranks in the scheduler."""

from __future__ import annotations

import time

import pytest

from helpers import InProcessBroker
from styx.broker.core import Broker
from styx.common.errors import InvalidArgument
from styx.common.offers import Offer
from styx.common.placement import INFEASIBLE, PLACED, WAITING, Ask
from styx.common.resources import Accelerator, Capacity, GpuDevice, Resources
from styx.scheduler.core import Scheduler
from styx.scheduler.model import RetryPolicy, TaskSpec
from styx.scheduler.workqueue import Assign, Cancel


class Provisioner:
    """Offers one host offer (max_instances) and records what it is asked to create."""

    def __init__(self, max_instances: int = 4) -> None:
        self.offer = Offer("local", "local", "", "host", 8, 16, max_instances=max_instances)
        self.calls: list[str] = []

    def list_offers(self) -> list[Offer]:
        return [self.offer]

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        self.calls.append(node_id)
        return f"op-{node_id}"

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        return "running", ""

    def terminate(self, node_id: str) -> None:
        pass


def gang(i: int, n: int, **res) -> Ask:
    return Ask(f"a{i}", f"t{i}", Resources(**res), n)


def register(broker: Broker, node_id: str, cpus: float = 8, gpus: int = 0) -> None:
    devices = [GpuDevice(g, "NVIDIA A100") for g in range(gpus)]
    address = f"10.0.0.{node_id[-1]}"
    broker.register_node(node_id, "local", f"pid-{node_id}", Capacity(cpus, 16, devices), address=address)


# ---- broker ----------------------------------------------------------------------------------


def test_gang_is_all_or_nothing_on_distinct_nodes(engine_factory):
    broker = Broker(engine_factory("broker"), None)
    register(broker, "n1")
    register(broker, "n2")
    (waiting,) = broker.allocate([gang(1, 3, cpus=2)])
    assert waiting.outcome == INFEASIBLE and "3 nodes" in waiting.reason  # no provisioner, 2 nodes
    assert broker.allocation_count() == 0  # nothing reserved
    (placed,) = broker.allocate([gang(2, 2, cpus=6)])
    assert placed.outcome == PLACED
    assert sorted(n.node_id for n in placed.nodes) == ["n1", "n2"]
    assert placed.node_id == placed.nodes[0].node_id
    assert {n.address for n in placed.nodes} == {"10.0.0.1", "10.0.0.2"}
    # Stored per rank, so each rank's allocation is released on its own; a repeat is idempotent.
    (again,) = broker.allocate([gang(2, 2, cpus=6)])
    assert again.nodes == placed.nodes and broker.allocation_count() == 2
    (busy,) = broker.allocate([gang(3, 2, cpus=4)])
    assert busy.outcome == WAITING and broker.allocation_count() == 2  # all or nothing: nothing held
    assert broker.release("a2") and broker.release("a2#1")
    assert broker.get_node("n1").used_cpus == 0 and broker.get_node("n2").used_cpus == 0


def test_gang_ranks_get_their_own_gpus(engine_factory):
    broker = Broker(engine_factory("broker"), None)
    register(broker, "n1", gpus=2)
    register(broker, "n2", gpus=2)
    (placed,) = broker.allocate([Ask("g", "t", Resources(cpus=1, accelerators=(_a100(2),)), 2)])
    assert placed.outcome == PLACED and [n.gpu_indices for n in placed.nodes] == [(0, 1), (0, 1)]


def _a100(count: int) -> Accelerator:
    return Accelerator("A100", count)


def test_gang_provisions_only_the_missing_nodes(engine_factory):
    prov = Provisioner(max_instances=4)
    broker = Broker(engine_factory("broker"), prov)
    register(broker, "n1")
    (first,) = broker.allocate([gang(1, 3, cpus=4)])
    assert first.outcome == WAITING and len(prov.calls) == 2  # n1 fits: two more nodes
    (second,) = broker.allocate([gang(1, 3, cpus=4)])
    assert second.outcome == WAITING and len(prov.calls) == 2  # the booting nodes take the ranks
    assert second.reason.startswith("waiting for node ")
    for node_id in prov.calls:
        broker.register_node(node_id, "local", "", Capacity(8, 16))
    (placed,) = broker.allocate([gang(1, 3, cpus=4)])
    assert placed.outcome == PLACED and len({n.node_id for n in placed.nodes}) == 3


def test_gang_larger_than_any_offer_allows_is_infeasible(engine_factory):
    prov = Provisioner(max_instances=2)
    broker = Broker(engine_factory("broker"), prov)
    (answer,) = broker.allocate([gang(1, 3, cpus=1)])
    assert answer.outcome == INFEASIBLE and "at most 2" in answer.reason and "STYX_LOCAL_MAX_NODES" in answer.reason
    assert prov.calls == []
    (too_big,) = broker.allocate([gang(2, 2, cpus=64)])
    assert too_big.outcome == INFEASIBLE and "cpus=64" in too_big.reason


def test_gang_pinned_to_a_cluster(engine_factory):
    prov = Provisioner(max_instances=8)
    broker = Broker(engine_factory("broker"), prov)
    view = broker.create_cluster("duo", Resources(cpus=4), 2, 0, False)
    for node_id in view.node_ids:
        broker.register_node(node_id, "local", "", Capacity(8, 16))
    broker.reconcile()
    register(broker, "n9")  # a pool node: never used for the cluster's gang
    calls = len(prov.calls)
    (placed,) = broker.allocate([gang(1, 2, cpus=2, cluster="duo")])
    assert placed.outcome == PLACED and {n.node_id for n in placed.nodes} == set(view.node_ids)
    (bigger,) = broker.allocate([gang(2, 3, cpus=1, cluster="duo")])
    assert bigger.outcome == INFEASIBLE and "has 2 node(s)" in bigger.reason
    (later,) = broker.allocate([gang(3, 2, cpus=8, cluster="duo")])
    assert later.outcome == WAITING
    assert len(prov.calls) == calls  # a cluster's gang never provisions


# ---- scheduler -------------------------------------------------------------------------------


@pytest.fixture
def plane(engine_factory):
    broker = Broker(engine_factory("broker"), None, lease_seconds=60)
    for node_id in ("n1", "n2", "n3"):
        register(broker, node_id)
    return Scheduler(engine_factory("scheduler"), InProcessBroker(broker)), broker


def submit(sched: Scheduler, n: int = 2, **spec) -> str:
    _, (task,) = sched.submit_job(f"r-{n}-{len(spec)}", "", [TaskSpec(name="g", run="true", num_nodes=n, **spec)])
    assert sched.dispatch_once() == 1
    return task.task_id


def ranks_of(sched: Scheduler, task_id: str) -> dict[str, int]:
    """node -> rank of the task's placed ranks."""
    return {r.node_id: i for i, r in enumerate(sched.get_task(task_id).ranks)}


def test_num_nodes_is_validated(plane):
    sched, _ = plane
    with pytest.raises(InvalidArgument, match=r"num_nodes: must be 1-64, got 65"):
        sched.submit_job("bad", "", [TaskSpec(name="g", run="true", num_nodes=65)])


def test_gang_ranks_are_dispatched_and_succeed_together(plane):
    sched, broker = plane
    task_id = submit(sched, 2, resources=Resources(cpus=6))
    task = sched.get_task(task_id)
    assert task.state == "SCHEDULED" and len(task.ranks) == 2
    nodes = ranks_of(sched, task_id)
    for node_id, rank in nodes.items():
        (item,) = sched.outstanding_work(node_id)
        assert isinstance(item, Assign) and (item.rank, item.num_nodes) == (rank, 2)
        assert item.node_addresses == tuple(r.address for r in task.ranks)
    (n0, n1) = sorted(nodes, key=nodes.get)
    assert sched.report(n1, task_id, 1, "RUNNING", None, "", rank=1).state == "RUNNING"
    sched.append_logs(task_id, 1, 0, b"rank1\n", rank=1)
    sched.append_logs(task_id, 1, 0, b"rank0\n", rank=0)
    assert sched.report(n1, task_id, 1, "SUCCEEDED", 0, "", rank=1).state == "RUNNING"
    assert broker.get_node(n1).used_cpus == 0  # an ended rank frees its node at once
    done = sched.report(n0, task_id, 1, "SUCCEEDED", 0, "", rank=0)
    assert done.state == "SUCCEEDED" and [r.state for r in done.ranks] == ["SUCCEEDED", "SUCCEEDED"]
    assert broker.allocation_count() == 0
    logs = list(sched.stream_logs(task_id, 0, 0, True, lambda: True, rank=1))
    assert b"".join(c[2] for c in logs) == b"rank1\n"
    with pytest.raises(InvalidArgument, match="rank"):
        list(sched.stream_logs(task_id, 0, 0, False, lambda: True, rank=2))


def test_one_failed_rank_fails_the_task_and_stops_the_others(plane):
    sched, broker = plane
    task_id = submit(sched, 3)
    nodes = ranks_of(sched, task_id)
    by_rank = sorted(nodes, key=nodes.get)
    for rank, node_id in enumerate(by_rank):
        sched.report(node_id, task_id, 1, "RUNNING", None, "", rank=rank)
    failed = sched.report(by_rank[1], task_id, 1, "FAILED", 3, "run exited with 3", rank=1)
    assert failed.state == "FAILED" and failed.exit_code == 3 and "rank 1" in failed.failure_reason
    for rank in (0, 2):
        (item,) = sched.outstanding_work(by_rank[rank])
        assert isinstance(item, Cancel) and item.rank == rank
    assert sched.outstanding_work(by_rank[1]) == []
    assert broker.allocation_count() == 2  # held until the stopped ranks confirm
    sched.report(by_rank[0], task_id, 1, "CANCELLED", None, "stopped", rank=0)
    sched.report(by_rank[2], task_id, 1, "CANCELLED", None, "stopped", rank=2)
    task = sched.get_task(task_id)
    assert task.state == "FAILED" and [r.state for r in task.ranks] == ["CANCELLED", "FAILED", "CANCELLED"]
    assert broker.allocation_count() == 0 and sched.outstanding_work(by_rank[0]) == []


def test_a_retried_gang_waits_for_every_rank_to_stop(plane):
    sched, _ = plane
    task_id = submit(sched, 2, retry=RetryPolicy(max_retries=1, backoff_s=0.0001))
    nodes = ranks_of(sched, task_id)
    by_rank = sorted(nodes, key=nodes.get)
    sched.report(by_rank[0], task_id, 1, "FAILED", 1, "", rank=0)
    # Not re-queued while rank 1 still runs: an attempt never overlaps the previous one.
    assert sched.get_task(task_id).state == "SCHEDULED" and sched.dispatch_once() == 0
    sched.report(by_rank[1], task_id, 1, "CANCELLED", None, "", rank=1)
    assert sched.get_task(task_id).state == "PENDING"
    time.sleep(0.01)
    assert sched.dispatch_once() == 1
    task = sched.get_task(task_id)
    assert task.attempt == 2 and len(task.ranks) == 2


def test_cancel_stops_every_rank(plane):
    sched, broker = plane
    task_id = submit(sched, 2)
    nodes = ranks_of(sched, task_id)
    assert sched.cancel_task(task_id).state == "CANCELLED"
    for node_id, rank in nodes.items():
        (item,) = sched.outstanding_work(node_id)
        assert isinstance(item, Cancel) and item.rank == rank
        sched.report(node_id, task_id, 1, "CANCELLED", None, "", rank=rank)
    assert broker.allocation_count() == 0


def test_a_lost_node_of_any_rank_requeues_the_whole_task(plane):
    sched, broker = plane
    task_id = submit(sched, 2)
    nodes = ranks_of(sched, task_id)
    by_rank = sorted(nodes, key=nodes.get)
    broker.deregister_node(by_rank[1], "gone")
    sched._requeue_lost({by_rank[1]})
    (item,) = sched.outstanding_work(by_rank[0])
    assert isinstance(item, Cancel)  # the surviving rank is stopped first
    assert sched.get_task(task_id).state == "SCHEDULED"
    sched.report(by_rank[0], task_id, 1, "CANCELLED", None, "", rank=0)
    task = sched.get_task(task_id)
    assert task.state == "PENDING" and "was lost" in task.failure_reason
    assert broker.allocation_count() == 0
    assert sched.dispatch_once() == 1
    placed = sched.get_task(task_id)
    assert placed.attempt == 2 and by_rank[1] not in {r.node_id for r in placed.ranks}


def test_every_rank_of_a_gang_may_fetch_its_workdir_and_no_other_node(plane):
    from styx.common.errors import PermissionDenied

    sched, _ = plane
    job_id, (task,) = sched.submit_job(
        "wd", "", [TaskSpec(name="g", run="true", num_nodes=2, resources=Resources(cpus=6))], workdir=b"tgz"
    )
    assert sched.dispatch_once() == 1
    nodes = ranks_of(sched, task.task_id)
    assert len(nodes) == 2
    for node_id in nodes:
        assert sched.get_workdir(job_id, node_id) == b"tgz"
    (outsider,) = {"n1", "n2", "n3"} - set(nodes)
    with pytest.raises(PermissionDenied):
        sched.get_workdir(job_id, outsider)


def test_each_rank_appends_only_its_own_log(plane):
    from styx.common.errors import PermissionDenied

    sched, _ = plane
    task_id = submit(sched, 2, resources=Resources(cpus=6))
    by_rank = {rank: node for node, rank in ranks_of(sched, task_id).items()}
    assert sched.append_logs(task_id, 1, 0, b"r1\n", rank=1, node_id=by_rank[1]) == 3
    with pytest.raises(PermissionDenied):
        sched.append_logs(task_id, 1, 0, b"r0?\n", rank=0, node_id=by_rank[1])
    assert sched.append_logs(task_id, 1, 0, b"r0\n", rank=0, node_id=by_rank[0]) == 3


class TwoContexts:
    """Offers the same pod shape in two Kubernetes contexts (a first, then b) and lets the
    test fail any operation, as a pod that stays unschedulable fails after its timeout."""

    def __init__(self) -> None:
        self.offers = [
            Offer("kubernetes", "a", "", "cpu004-mem0008g", 4, 8, price_per_hour=0.1),
            Offer("kubernetes", "b", "", "cpu004-mem0008g", 4, 8, price_per_hour=0.2),
        ]
        self.calls: list[tuple[str, str]] = []  # (node id, region)
        self.failed: dict[str, str] = {}
        self.terminated: list[str] = []

    def list_offers(self) -> list[Offer]:
        return self.offers

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        self.calls.append((node_id, offer.region))
        return f"op-{node_id}"

    def operation_state(self, operation_id: str) -> tuple[str, str, str]:
        node_id = operation_id.removeprefix("op-")
        if node_id in self.failed:
            return "failed", self.failed[node_id], "quota"
        return "running", "", ""

    def terminate(self, node_id: str) -> None:
        self.terminated.append(node_id)


def test_a_gang_whose_node_fails_is_provisioned_again_whole_in_one_place(engine_factory):
    """All or nothing per place: when one rank's node fails (a pod unschedulable in context
    a), its sibling that already booted there is released too, and the whole gang goes to
    context b; before, the booted sibling was kept and the gang ended split over a and b."""
    prov = TwoContexts()
    broker = Broker(engine_factory("broker"), prov)
    (first,) = broker.allocate([gang(1, 2, cpus=2)])
    assert first.outcome == WAITING and [r for _, r in prov.calls] == ["a", "a"]
    (booted, stuck) = (n for n, _ in prov.calls)
    broker.register_node(booted, "kubernetes", f"a/default/{booted}", Capacity(4, 8), region="a")
    prov.failed[stuck] = "a: pod unschedulable for 30 s: 0/1 nodes are available"
    broker.reconcile()  # polls the operations: the stuck one failed

    assert broker.get_node(booted).state == "GONE"
    assert prov.terminated == [booted]  # the failed one's provider cleaned up after itself
    (again,) = broker.allocate([gang(1, 2, cpus=2)])
    assert again.outcome == WAITING and [r for _, r in prov.calls[2:]] == ["b", "b"]
    for node_id, _ in prov.calls[2:]:
        broker.register_node(node_id, "kubernetes", f"b/default/{node_id}", Capacity(4, 8), region="b")
    (placed,) = broker.allocate([gang(1, 2, cpus=2)])
    assert placed.outcome == PLACED
    assert {broker.get_node(n.node_id).region for n in placed.nodes} == {"b"}
    attempts = {a.node_id: a for a in broker.list_attempts()}
    assert attempts[stuck].error.startswith("a: pod unschedulable")
    assert attempts[booted].state == "registered"  # it did boot; its release is a termination


def test_a_single_tasks_failed_node_releases_nothing_else(engine_factory):
    prov = TwoContexts()
    broker = Broker(engine_factory("broker"), prov)
    one, two = broker.allocate([Ask("s1", "t1", Resources(cpus=3)), Ask("s2", "t2", Resources(cpus=3))])
    assert one.outcome == two.outcome == WAITING and len(prov.calls) == 2
    prov.failed[prov.calls[0][0]] = "no capacity"
    broker.reconcile()
    assert prov.terminated == []  # the other ask's node is no sibling
    assert prov.calls[1][0] not in [a.node_id for a in broker.list_attempts() if a.state == "failed"]
