"""Broker core: best fit, GPUs by index, provisioning, infeasible requests, leases."""

from __future__ import annotations

import pytest

from styx.broker.core import Broker
from styx.common.clock import FakeClock
from styx.common.offers import Offer
from styx.common.placement import INFEASIBLE, PLACED, WAITING, Ask
from styx.common.resources import Accelerator, Capacity, GpuDevice, Resources


class RecordingProvisioner:
    def __init__(self, offers: list[Offer]) -> None:
        self.offers = offers
        self.calls: list[tuple[str, Offer, bool]] = []
        self.terminated: list[str] = []
        self.powered: list[tuple[str, str]] = []
        self.can_stop = True
        self.state = "running", ""

    def list_offers(self) -> list[Offer]:
        return self.offers

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        self.calls.append((node_id, offer, spot))
        return f"op-{node_id}"

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        return self.state

    def terminate(self, node_id: str) -> None:
        self.terminated.append(node_id)

    def stop(self, node_id: str) -> None:
        if not self.can_stop:
            raise FailedPrecondition("provider 'local' cannot stop instances; `sky down` terminates them")
        self.powered.append(("stop", node_id))

    def start(self, node_id: str) -> None:
        self.powered.append(("start", node_id))


CHEAP = Offer("aws", "us-east-1", "us-east-1a", "m6i.xlarge", 4, 16, price_per_hour=0.19, spot_price_per_hour=0.08)
GPU = Offer("aws", "us-east-1", "us-east-1a", "p4d.24xlarge", 96, 1152, "A100", 8, 40, 32.77, 12.0)


@pytest.fixture
def broker(engine_factory):
    # A fake clock: with the system clock a 0.2 s lease ran out between a register and the
    # next reconcile on a loaded machine, and the node was LOST (a flaky
    # test_cluster_stop_and_start). Tests about leases advance the clock themselves.
    return Broker(engine_factory("broker"), RecordingProvisioner([GPU, CHEAP]), lease_seconds=0.2, clock=FakeClock())


def ask(i: int, **res) -> Ask:
    return Ask(f"a{i}", f"t{i}", Resources(**res))


def test_best_fit_prefers_the_tightest_node(broker):
    broker.register_node("big", "local", "", Capacity(16, 64))
    broker.register_node("small", "local", "", Capacity(2, 4))
    (placed,) = broker.allocate([ask(1, cpus=2)])
    assert (placed.outcome, placed.node_id) == (PLACED, "small")
    (again,) = broker.allocate([ask(1, cpus=2)])
    assert again.node_id == "small"  # idempotent on allocation_id
    (next_one,) = broker.allocate([ask(2, cpus=2)])
    assert next_one.node_id == "big"


def test_gpu_indices_and_release(broker):
    gpus = [GpuDevice(i, "NVIDIA A100-SXM4-80GB", 80) for i in range(4)]
    broker.register_node("g", "local", "", Capacity(32, 256, gpus))
    first, second = broker.allocate(
        [ask(1, cpus=1, accelerators=(Accelerator("A100", 2),)), ask(2, cpus=1, accelerators=(Accelerator("a100", 2),))]
    )
    assert first.gpu_indices == (0, 1) and second.gpu_indices == (2, 3)
    (third,) = broker.allocate([ask(3, cpus=1, accelerators=(Accelerator("A100", 1),))])
    assert third.outcome == WAITING  # busy, but the GPU offer could host it
    assert broker.release("a1") is True and broker.release("a1") is False
    (fourth,) = broker.allocate([ask(4, cpus=1, accelerators=(Accelerator("A100", 1),))])
    assert fourth.gpu_indices == (0,)


def test_a10_does_not_match_a100(broker):
    broker.register_node("g", "local", "", Capacity(8, 32, [GpuDevice(0, "NVIDIA A100")]))
    broker._provisioner.offers = []
    (res,) = broker.allocate([ask(1, cpus=1, accelerators=(Accelerator("A10", 1),))])
    assert res.outcome == INFEASIBLE


def test_nothing_fits_provisions_cheapest_feasible_offer_once(broker):
    prov = broker._provisioner
    first, second = broker.allocate([ask(1, cpus=2), ask(2, cpus=2)])
    assert first.outcome == WAITING and "provisioning" in first.reason
    assert second.outcome == WAITING and "to boot" in second.reason  # shares the pending node
    assert [c[1].instance_type for c in prov.calls] == ["m6i.xlarge"]
    node_id = prov.calls[0][0]
    broker.register_node(node_id, "aws", "i-1", Capacity(4, 16), "us-east-1", "us-east-1a", "m6i.xlarge")
    placed = broker.allocate([ask(1, cpus=2), ask(2, cpus=2)])
    assert {p.node_id for p in placed} == {node_id}


def test_spot_ranks_by_spot_price_and_requests_spot(broker):
    prov = broker._provisioner
    broker.allocate([ask(1, cpus=8, accelerators=(Accelerator("A100", 8),), use_spot=True)])
    (call,) = prov.calls
    assert call[1].instance_type == "p4d.24xlarge" and call[2] is True


def test_infeasible_names_the_request_and_offers(broker):
    # A known accelerator in a count no offer has: the offers are explained (an unknown
    # name gets a one-line "did you mean" instead: test_unknown_accelerators.py).
    (res,) = broker.allocate([ask(1, cpus=4, accelerators=(Accelerator("A100", 16),))])
    assert res.outcome == INFEASIBLE
    assert "A100:16" in res.reason and "p4d.24xlarge" in res.reason
    (typo,) = broker.allocate([ask(3, cpus=4, accelerators=(Accelerator("H100", 8),))])
    assert typo.outcome == INFEASIBLE and typo.reason.startswith("unknown accelerator H100; did you mean A100?")
    (pinned,) = broker.allocate([ask(2, cpus=1, infra="gcp")])
    assert pinned.outcome == INFEASIBLE and "in gcp" in pinned.reason


def test_failed_provision_cools_the_offer_down(broker):
    prov = broker._provisioner
    broker.allocate([ask(1, cpus=2)])
    prov.state = ("failed", "InsufficientInstanceCapacity in us-east-1a")
    broker.reconcile()
    (res,) = broker.allocate([ask(1, cpus=2)])
    # The cheap offer is cooling down, so the next feasible offer is tried.
    assert [c[1].instance_type for c in prov.calls] == ["m6i.xlarge", "p4d.24xlarge"]
    assert res.outcome == WAITING


def test_silent_nodes_are_lost_and_come_back(engine_factory):

    clock = FakeClock()
    broker = Broker(engine_factory("broker"), RecordingProvisioner([CHEAP]), lease_seconds=0.2, clock=clock)
    broker.register_node("n", "local", "", Capacity(2, 4))
    clock.advance(0.3)
    broker.reconcile()
    assert broker.get_node("n").state == "LOST"
    assert broker.list_nodes() == []
    assert broker.heartbeat("n") is True
    assert broker.get_node("n").state == "READY"
    assert broker.heartbeat("unknown") is False


# ---- catalog, optimizer and failover ------------------------------------------------------

from styx.broker.catalog import Catalog  # noqa: E402 - grouped with the tests that use it
from styx.common.errors import FailedPrecondition, InvalidArgument  # noqa: E402


class FailoverProvisioner:
    """Reports providers, records provisions, and fails operations as told."""

    def __init__(self, providers: dict[str, str], host_offers: list[Offer] | None = None) -> None:
        self.providers = providers
        self.host_offers = host_offers or []
        self.calls: list[tuple[str, Offer, bool]] = []
        self.states: dict[str, tuple[str, str, str]] = {}
        self.refuse: set[str] = set()  # instance types whose Provision call is refused

    def list_offers(self) -> list[Offer]:
        return self.host_offers

    def list_providers(self) -> dict[str, str]:
        return self.providers

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        self.calls.append((node_id, offer, spot))
        if offer.instance_type in self.refuse:
            raise FailedPrecondition(f"provider {offer.provider} refuses {offer.instance_type}")
        return f"op-{node_id}"

    def operation_state(self, operation_id: str) -> tuple[str, str, str]:
        return self.states.get(operation_id, ("running", "", ""))

    def fail_last(self, error: str, kind: str) -> None:
        self.states[f"op-{self.calls[-1][0]}"] = ("failed", error, kind)

    def places(self) -> list[str]:
        return [f"{o.provider}/{o.zone or o.region} {o.instance_type}" for _, o, _ in self.calls]


FAILOVER_OFFERS = [
    Offer("aws", "us-east-1", "us-east-1a", "g5.xlarge", 4, 16, "A10G", 1, 24, 1.0),
    Offer("aws", "us-east-1", "us-east-1b", "g5.xlarge", 4, 16, "A10G", 1, 24, 1.0),
    Offer("aws", "us-east-1", "us-east-1c", "g5.xlarge", 4, 16, "A10G", 1, 24, 1.0),
    Offer("aws", "us-west-2", "us-west-2a", "g5.xlarge", 4, 16, "A10G", 1, 24, 1.1),
    Offer("aws", "eu-west-1", "eu-west-1a", "g5.xlarge", 4, 16, "A10G", 1, 24, 1.2),
    Offer("gcp", "us-central1", "us-central1-a", "g2-standard-4", 4, 16, "A10G", 1, 24, 1.3),
    Offer("azure", "eastus", "", "Standard_NV36ads_A10_v5", 36, 440, "A10G", 1, 24, 0.5),
]


@pytest.fixture
def failover(engine_factory):
    prov = FailoverProvisioner({"aws": "", "gcp": "", "azure": "no credentials", "local": ""})
    return Broker(engine_factory("broker"), prov, catalog=Catalog(FAILOVER_OFFERS)), prov


def test_failover_walks_zone_then_region_then_provider_and_records_attempts(failover):
    broker, prov = failover
    a10g = ask(1, cpus=2, cpus_at_least=True, accelerators=(Accelerator("A10G", 1),))
    steps = [
        ("InsufficientInstanceCapacity in us-east-1a", "capacity"),  # -> next zone
        ("InsufficientInstanceCapacity in us-east-1b", "capacity"),  # -> next zone
        ("VcpuLimitExceeded in us-east-1", "quota"),  # -> next region
        ("InsufficientInstanceCapacity in us-west-2a", "capacity"),  # -> next region
        ("AuthFailure", "auth"),  # -> next provider
    ]
    for error, kind in steps:
        (res,) = broker.allocate([a10g])
        assert res.outcome == WAITING and "provisioning" in res.reason
        prov.fail_last(error, kind)
        broker.reconcile()
    (res,) = broker.allocate([a10g])
    assert prov.places() == [
        "aws/us-east-1a g5.xlarge",
        "aws/us-east-1b g5.xlarge",
        "aws/us-east-1c g5.xlarge",
        "aws/us-west-2a g5.xlarge",
        "aws/eu-west-1a g5.xlarge",
        "gcp/us-central1-a g2-standard-4",  # azure is cheaper but disabled: never provisioned
    ]
    attempts = broker.list_attempts(task_id="t1")
    assert [(a.offer.zone, a.state, a.error_kind) for a in attempts] == [
        ("us-central1-a", "pending", ""),
        ("eu-west-1a", "failed", "auth"),
        ("us-west-2a", "failed", "capacity"),
        ("us-east-1c", "failed", "quota"),
        ("us-east-1b", "failed", "capacity"),
        ("us-east-1a", "failed", "capacity"),
    ]
    assert attempts[-1].error == "InsufficientInstanceCapacity in us-east-1a"
    assert attempts[0].allocation_id == "a1" and attempts[0].hourly_price == 1.3
    node_id = attempts[0].node_id
    broker.register_node(node_id, "gcp", "i-1", Capacity(4, 16, [GpuDevice(0, "NVIDIA A10G")]), "us-central1")
    assert broker.list_attempts(node_id=node_id)[0].state == "registered"
    (placed,) = broker.allocate([a10g])
    assert (placed.outcome, placed.node_id) == (PLACED, node_id)
    assert len(broker.list_attempts(limit=2)) == 2


def test_refused_provision_fails_over_in_the_same_call(failover):
    broker, prov = failover
    prov.refuse.add("g5.xlarge")
    (res,) = broker.allocate([ask(1, cpus=2, cpus_at_least=True, accelerators=(Accelerator("A10G", 1),))])
    assert res.outcome == WAITING and "g2-standard-4" in res.reason
    # The refusal (FAILED_PRECONDITION, e.g. a provider turned off) cools the whole provider.
    assert prov.places() == ["aws/us-east-1a g5.xlarge", "gcp/us-central1-a g2-standard-4"]
    failed = [a for a in broker.list_attempts() if a.state == "failed"]
    assert [(a.offer.instance_type, a.error_kind, a.operation_id) for a in failed] == [("g5.xlarge", "auth", "")]
    assert "refuses" in failed[0].error


def test_only_disabled_providers_fit_is_infeasible_at_once(failover):
    broker, prov = failover
    (res,) = broker.allocate([ask(1, cpus=32, accelerators=(Accelerator("A10G", 1),))])
    assert res.outcome == INFEASIBLE and prov.calls == []
    assert "azure: provider disabled (no credentials)" in res.reason
    assert "4 vCPUs, request wants at least 32" not in res.reason  # exact 32 was asked
    assert "request wants exactly 32" in res.reason


def test_optimize_ranks_catalog_and_host_offers(failover):
    broker, prov = failover
    prov.host_offers = [Offer("local", "local", "", "host", 8, 32, "NVIDIA A10G", 1, max_instances=1)]
    ranking = broker.optimize(Resources(cpus=2, cpus_at_least=True, accelerators=(Accelerator("A10G", 1),)))
    assert [r.offer.instance_type for r in ranking.offers][:3] == ["host", "g5.xlarge", "g5.xlarge"]
    assert any(r.family == "azure" and "disabled" in r.reason for r in ranking.rejections)
    what_if = broker.optimize(Resources(accelerators=(Accelerator("A10G", 1),)), include_disabled=True, limit=2)
    assert [(r.offer.provider, r.enabled) for r in what_if.offers] == [("local", True), ("azure", False)]
    with pytest.raises(InvalidArgument, match="limit"):
        broker.optimize(Resources(), limit=5000)


def test_imported_catalog_replaces_a_provider_and_survives_restart(engine_factory):
    prov = FailoverProvisioner({"aws": "", "gcp": "", "azure": ""})
    broker = Broker(engine_factory("broker"), prov, catalog=Catalog(FAILOVER_OFFERS))
    imported = [
        Offer("gcp", "europe-west4", "europe-west4-a", "g2-standard-8", 8, 32, "L4", 1, 24, 0.85, 0.34),
        Offer("gcp", "europe-west4", "europe-west4-a", "n2-standard-8", 8, 32, price_per_hour=0.39),
    ]
    assert broker.import_catalog(imported, "r1") == (2, ["gcp"])
    with pytest.raises(InvalidArgument, match=r"offers\[0\]\.cpus"):
        broker.import_catalog([Offer("aws", "us-east-1", "", "bad", 0, 1)])
    infos = {c.provider: c for c in broker.list_catalogs()}
    assert (infos["gcp"].offers, infos["gcp"].imported, infos["aws"].imported) == (2, True, False)
    restarted = Broker(engine_factory("broker"), prov, catalog=Catalog(FAILOVER_OFFERS))
    assert sorted(o.instance_type for o in restarted.catalog.offers if o.provider == "gcp") == [
        "g2-standard-8",
        "n2-standard-8",
    ]
    accels = {a.name: a for a in restarted.list_accelerators()}
    assert set(accels) == {"A10G", "L4"} and accels["A10G"].providers == ("aws", "azure")
    (l4,) = accels["L4"].offers
    assert (l4.count, l4.cheapest.instance_type, l4.cheapest_spot) == (1, "g2-standard-8", 0.34)
    assert [a.name for a in restarted.list_accelerators("l4")] == ["L4"]


def test_deregistered_node_is_gone_until_it_registers_again(broker):
    broker.register_node("n", "local", "", Capacity(2, 4))
    broker.deregister_node("n", "agent stopped")
    assert broker.list_nodes() == []
    assert broker.get_node("n").state == "GONE"
    assert broker.heartbeat("n") is False  # a late heartbeat does not revive it
    (res,) = broker.allocate([ask(1, cpus=1, infra="local")])
    assert res.outcome != "placed"
    broker.register_node("n", "local", "", Capacity(2, 4))
    assert broker.get_node("n").state == "READY"


def _up(broker, name: str, nodes: int = 2, **res) -> list[str]:
    """Create a cluster, play its nodes' registration, and return their ids."""
    view = broker.create_cluster(name, Resources(**res), nodes, 0, False)
    node_ids = list(view.node_ids)
    for node_id in node_ids:
        broker.register_node(node_id, "aws", f"i-{node_id}", Capacity(4, 16), "us-east-1", "us-east-1a", "m6i.xlarge")
    broker.reconcile()
    assert broker.clusters.get(name).state == "UP"
    return node_ids


def test_cluster_nodes_are_provisioned_labelled_and_reserved(broker):
    prov = broker._provisioner
    view = broker.create_cluster("train", Resources(cpus=4), 2, 0, False)
    assert view.state == "INIT" and len(view.node_ids) == 2
    assert [c[1].instance_type for c in prov.calls] == ["m6i.xlarge", "m6i.xlarge"]
    (waiting,) = broker.allocate([ask(1, cpus=1, cluster="train")])
    assert waiting.outcome == WAITING and "starting" in waiting.reason
    node_ids = _up(broker, "train")
    assert broker.get_node(node_ids[0]).labels == {"styx.dev/cluster": "train", "styx.dev/arch": "x86_64"}
    a, b = broker.allocate([ask(2, cpus=4, cluster="train"), ask(3, cpus=4, cluster="train")])
    assert {a.node_id, b.node_id} == set(node_ids)
    # The shared pool never lands on cluster nodes, even when they have room.
    broker.release("a2")
    (pool,) = broker.allocate([ask(4, cpus=1)])
    assert pool.outcome == WAITING and pool.node_id == ""
    assert broker.create_cluster("train", Resources(cpus=4), 2, 0, False).node_ids == node_ids  # reused


def test_pinned_asks_that_cannot_run_fail_with_the_reason(broker):
    (missing,) = broker.allocate([ask(1, cluster="nope")])
    assert missing.outcome == INFEASIBLE and "cluster 'nope' does not exist" in missing.reason
    _up(broker, "small", nodes=1)
    (huge,) = broker.allocate([ask(2, cpus=64, cluster="small")])
    assert huge.outcome == INFEASIBLE and "cannot hold it" in huge.reason


def test_cluster_down_terminates_nodes_and_refuses_more_work(broker):
    node_ids = _up(broker, "tmp")
    view = broker.down_cluster("tmp")
    assert view.state == "DOWN"
    assert broker._provisioner.terminated == node_ids
    assert all(broker.get_node(n).state == "GONE" for n in node_ids)  # its tasks re-queue at once
    (late,) = broker.allocate([ask(1, cluster="tmp")])
    assert late.outcome == INFEASIBLE and "is down" in late.reason


def test_idle_cluster_is_autostopped(engine_factory):
    # Time moves on a fake clock: editing the in-memory view instead would be undone by a
    # reload from the store (on PostgreSQL, whenever the lock's epoch says so).

    clock = FakeClock()
    broker = Broker(engine_factory("broker"), RecordingProvisioner([GPU, CHEAP]), lease_seconds=3600, clock=clock)
    _up(broker, "idle", nodes=1)
    broker.set_autostop("idle", 1, True)
    clock.advance(30)
    broker.reconcile()
    assert broker.clusters.get("idle").state == "UP"  # not idle long enough
    clock.advance(60)
    broker.reconcile()
    view = broker.clusters.get("idle")
    assert view.state == "DOWN" and "autostopped after 1 idle minutes" in view.reason


def test_clusters_survive_a_broker_restart(broker, engine_factory):
    node_ids = _up(broker, "keep", nodes=1)
    again = Broker(engine_factory("broker"), RecordingProvisioner([CHEAP]))
    assert again.clusters.get("keep").state == "UP"
    assert again.clusters.cluster_of_node(node_ids[0]) == "keep"
    (placed,) = again.allocate([ask(1, cpus=1, cluster="keep")])
    assert placed.node_id == node_ids[0]


def test_infeasible_cluster_is_refused_at_creation(broker):
    from styx.common.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="A100:16"):
        broker.create_cluster("big", Resources(accelerators=(Accelerator("A100", 16),)), 1, 0, False)
    with pytest.raises(InvalidArgument, match="unknown accelerator H100; did you mean A100"):
        broker.create_cluster("typo", Resources(accelerators=(Accelerator("H100", 8),)), 1, 0, False)
    with pytest.raises(InvalidArgument, match="name"):
        broker.create_cluster("Bad_Name", Resources(), 1, 0, False)


def test_cluster_that_gets_no_node_fails_with_the_reason(engine_factory):
    local = Offer("local", "local", "", "host", 4, 8, max_instances=1)
    broker = Broker(engine_factory("broker"), RecordingProvisioner([local]))
    broker.register_node("pool", "local", "pid-1", Capacity(4, 8), "local", "", "host")  # the one local node
    view = broker.create_cluster("dev", Resources(cpus=1), 1, 0, False)
    assert view.state == "INIT" and "instance limit" in view.reason
    for _ in range(10):
        broker.reconcile()
    view = broker.clusters.get("dev")
    assert view.state == "FAILED" and "instance limit" in view.reason
    (pinned,) = broker.allocate([ask(1, cluster="dev")])
    assert pinned.outcome == INFEASIBLE and "cluster 'dev' failed" in pinned.reason


def test_cluster_stop_and_start(broker):
    (node_id,) = _up(broker, "gpu", nodes=1)
    view = broker.stop_cluster("gpu")
    assert view.state == "STOPPED" and broker._provisioner.powered == [("stop", node_id)]
    assert broker.get_node(node_id).state == "GONE"  # its unfinished tasks re-queue now
    (refused,) = broker.allocate([ask(1, cluster="gpu")])
    assert refused.outcome == INFEASIBLE and "sky start gpu" in refused.reason
    view = broker.start_cluster("gpu")
    assert view.state == "STARTING"
    (waiting,) = broker.allocate([ask(2, cluster="gpu")])
    assert waiting.outcome == WAITING
    broker.register_node(node_id, "aws", f"i-{node_id}", Capacity(4, 16), "us-east-1", "us-east-1a", "m6i.xlarge")
    broker.reconcile()
    assert broker.clusters.get("gpu").state == "UP"
    (placed,) = broker.allocate([ask(3, cluster="gpu")])
    assert placed.node_id == node_id


def test_autostop_stops_or_tears_down_when_the_provider_cannot_stop(broker):
    _up(broker, "a", nodes=1)
    broker.set_autostop("a", 1, False)
    broker.clusters.get("a").last_used_at -= 120
    broker.reconcile()
    assert broker.clusters.get("a").state == "STOPPED"
    broker._provisioner.can_stop = False
    _up(broker, "b", nodes=1)
    broker.set_autostop("b", 1, False)
    broker.clusters.get("b").last_used_at -= 120
    broker.reconcile()
    view = broker.clusters.get("b")
    assert view.state == "DOWN" and "cannot stop instances" in view.reason


def test_a_join_token_is_redeemed_once_but_its_redeemer_may_retry(broker, engine_factory):
    from styx.common.errors import InvalidArgument, PermissionDenied

    broker.join_node("node-j", "req-1")
    broker.join_node("node-j", "req-1")  # the first reply was lost: same request, same answer
    with pytest.raises(PermissionDenied, match="already used"):
        broker.join_node("node-j", "req-2")
    # A second broker replica on the same store sees the redemption too.
    replica = Broker(engine_factory("broker"), RecordingProvisioner([CHEAP]))
    with pytest.raises(PermissionDenied):
        replica.join_node("node-j", "req-3")
    with pytest.raises(InvalidArgument, match="request_id"):
        broker.join_node("node-k", "")


SPOT_OFFERS = [
    Offer("aws", "us-east-1", "us-east-1a", "m6i.large", 2, 8, price_per_hour=0.10, spot_price_per_hour=0.030),
    Offer("aws", "us-east-1", "us-east-1b", "m6i.large", 2, 8, price_per_hour=0.10, spot_price_per_hour=0.035),
]


@pytest.mark.parametrize("spot", [True, False])
def test_a_reclaimed_spot_node_sends_the_relaunch_to_another_zone(engine_factory, spot):
    prov = FailoverProvisioner({"aws": ""})
    broker = Broker(engine_factory("broker"), prov, catalog=Catalog(SPOT_OFFERS))
    (res,) = broker.allocate([Ask("t1/1", "t1", Resources(cpus=2, use_spot=spot))])
    node_id = prov.calls[0][0]
    broker.register_node(node_id, "aws", "i-1", Capacity(2, 8), "us-east-1", "us-east-1a", "m6i.large")
    (placed,) = broker.allocate([Ask("t1/1", "t1", Resources(cpus=2, use_spot=spot))])
    assert (placed.outcome, placed.node_id) == (PLACED, node_id)
    # The provisioner's reconcile saw the instance vanish (a spot reclaim, or deleted by hand).
    broker.deregister_node(node_id, "instance i-1 vanished", instance_lost=True)
    (res,) = broker.allocate([Ask("t1/2", "t1", Resources(cpus=2, use_spot=spot))])
    assert res.outcome == WAITING
    lost = broker.list_attempts(node_id=node_id)[0]
    assert lost.state == "lost" and "instance i-1 vanished" in lost.error
    if spot:
        # Spot capacity ran out in 1a: the relaunch goes to the next zone.
        assert prov.places() == ["aws/us-east-1a m6i.large", "aws/us-east-1b m6i.large"]
        assert lost.error_kind == "capacity" and lost.error.startswith("spot instance reclaimed")
    else:
        # An on-demand instance deleted by hand says nothing about capacity: same zone again.
        assert prov.places() == ["aws/us-east-1a m6i.large", "aws/us-east-1a m6i.large"]
        assert lost.error_kind == ""
