"""Broker core: best fit, GPUs by index, provisioning, infeasible requests, leases."""

from __future__ import annotations

import pytest
from styx.broker.core import INFEASIBLE, PLACED, WAITING, Ask, Broker
from styx.common.offers import Offer
from styx.common.resources import Accelerator, Capacity, GpuDevice, Resources


class RecordingProvisioner:
    def __init__(self, offers: list[Offer]) -> None:
        self.offers = offers
        self.calls: list[tuple[str, Offer, bool]] = []
        self.state = "running", ""

    def list_offers(self) -> list[Offer]:
        return self.offers

    def provision(self, request_id: str, node_id: str, offer: Offer, spot: bool) -> str:
        self.calls.append((node_id, offer, spot))
        return f"op-{node_id}"

    def operation_state(self, operation_id: str) -> tuple[str, str]:
        return self.state


CHEAP = Offer("aws", "us-east-1", "us-east-1a", "m6i.xlarge", 4, 16, price_per_hour=0.19, spot_price_per_hour=0.08)
GPU = Offer("aws", "us-east-1", "us-east-1a", "p4d.24xlarge", 96, 1152, "A100", 8, 40, 32.77, 12.0)


@pytest.fixture
def broker(engine_factory):
    return Broker(engine_factory("broker"), RecordingProvisioner([GPU, CHEAP]), lease_seconds=0.2)


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
    (res,) = broker.allocate([ask(1, cpus=4, accelerators=(Accelerator("H100", 8),))])
    assert res.outcome == INFEASIBLE
    assert "H100:8" in res.reason and "p4d.24xlarge" in res.reason
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


def test_silent_nodes_are_lost_and_come_back(broker):
    import time

    broker.register_node("n", "local", "", Capacity(2, 4))
    time.sleep(0.3)
    broker.reconcile()
    assert broker.get_node("n").state == "LOST"
    assert broker.list_nodes() == []
    assert broker.heartbeat("n") is True
    assert broker.get_node("n").state == "READY"
    assert broker.heartbeat("unknown") is False
