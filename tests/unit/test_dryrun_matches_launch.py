"""Optimize (what ``sky launch --dryrun`` prints) and Allocate (the real launch) agree: the
offer shown as chosen is the one provisioned, and a gang refused by one is refused by both."""

from __future__ import annotations

from test_broker_core import FailoverProvisioner

from styx.broker.catalog import Catalog
from styx.broker.core import Broker
from styx.common.offers import Offer
from styx.common.placement import INFEASIBLE, WAITING, Ask
from styx.common.resources import Capacity, Resources

LOCAL_HOST = Offer("local", "local", "", "local-host", 8, 32, max_instances=1)
SPOT = [
    Offer("aws", "us-east-1", "us-east-1a", "m6i.large", 2, 8, price_per_hour=0.10, spot_price_per_hour=0.030),
    Offer("aws", "us-east-1", "us-east-1b", "m6i.large", 2, 8, price_per_hour=0.10, spot_price_per_hour=0.035),
]


def test_local_multi_node_beyond_the_node_limit_is_refused_by_both(engine_factory):
    # Regression: the dryrun showed "chosen: local/local local-host" for num_nodes: 2 while
    # the launch failed at once (at most 1 local node, STYX_LOCAL_MAX_NODES).
    prov = FailoverProvisioner({"local": ""}, [LOCAL_HOST])
    broker = Broker(engine_factory("broker"), prov, catalog=Catalog([]))
    res = Resources(cpus=2, infra="local")
    dry = broker.optimize(res, num_nodes=2)
    (real,) = broker.allocate([Ask("a1", "t1", res, 2)])
    assert real.outcome == INFEASIBLE and dry.offers == []
    assert dry.rejections[0].reason == real.reason
    assert "raise STYX_LOCAL_MAX_NODES" in real.reason
    # One node fits the limit: both take the local host.
    assert [r.offer.instance_type for r in broker.optimize(res, num_nodes=1).offers] == ["local-host"]


def test_local_offer_at_its_limit_is_shown_as_skipped(engine_factory):
    prov = FailoverProvisioner({"local": ""}, [LOCAL_HOST])
    broker = Broker(engine_factory("broker"), prov, catalog=Catalog([]))
    (first,) = broker.allocate([Ask("a1", "t1", Resources(cpus=8, infra="local"))])
    assert first.outcome == WAITING and len(prov.calls) == 1
    dry = broker.optimize(Resources(cpus=8, infra="local"))
    (second,) = broker.allocate([Ask("a2", "t2", Resources(cpus=8, infra="local"))])
    assert len(prov.calls) == 1  # the launch does not create a second local node
    assert second.outcome == WAITING and "waiting for node" in second.reason
    (skip,) = [r for r in dry.rejections if r.reason.startswith("skipped now")]
    assert skip.family == "local/local local-host" and "instance limit (1" in skip.reason


def test_after_a_spot_reclaim_the_dryrun_chooses_what_the_relaunch_takes(engine_factory):
    # Regression: after a spot reclaim cooled us-east-1a's spot market the launch went to
    # us-east-1b, while the dryrun still showed us-east-1a as chosen.
    prov = FailoverProvisioner({"aws": ""})
    broker = Broker(engine_factory("broker"), prov, catalog=Catalog(SPOT))
    spot = Resources(cpus=2, use_spot=True)
    assert broker.optimize(spot).offers[0].offer.zone == "us-east-1a"
    broker.allocate([Ask("t1/1", "t1", spot)])
    node_id = prov.calls[0][0]
    broker.register_node(node_id, "aws", "i-1", Capacity(2, 8), "us-east-1", "us-east-1a", "m6i.large")
    broker.deregister_node(node_id, "instance i-1 vanished", instance_lost=True)
    dry = broker.optimize(spot)
    broker.allocate([Ask("t1/2", "t1", spot)])
    assert prov.calls[-1][1].zone == "us-east-1b"
    assert [r.offer.zone for r in dry.offers] == ["us-east-1b", "us-east-1a"]  # 1a waits its cooldown out
    # Ranked as deep as the launch ranks before the skip, so a short answer agrees too.
    assert [r.offer.zone for r in broker.optimize(spot, limit=1).offers] == ["us-east-1b"]
    (skip,) = [r for r in dry.rejections if r.reason.startswith("skipped now")]
    assert skip.family == "aws/us-east-1/us-east-1a m6i.large" and "spot instance reclaimed" in skip.reason
    # On-demand is not cooled by a spot reclaim: 1a stays first there, as the launch would do.
    assert broker.optimize(Resources(cpus=2)).offers[0].offer.zone == "us-east-1a"


def test_a_booting_node_of_the_other_arch_does_not_absorb_an_arch_request(engine_factory):
    offers = [
        Offer("aws", "us-east-1", "us-east-1a", "m6i.large", 2, 8, price_per_hour=0.096),
        Offer("aws", "us-east-1", "us-east-1a", "m7g.large", 2, 8, price_per_hour=0.082, arch="arm64"),
    ]
    prov = FailoverProvisioner({"aws": ""})
    broker = Broker(engine_factory("broker"), prov, catalog=Catalog(offers))
    (x86,) = broker.allocate([Ask("a1", "t1", Resources(cpus=1, cpus_at_least=True))])
    assert x86.outcome == WAITING
    assert [o.instance_type for _, o, _ in prov.calls] == ["m6i.large"]  # the default: x86_64
    # Regression: the booting m6i node (1 vCPU still free) absorbed an arm64 request.
    (arm,) = broker.allocate([Ask("a2", "t2", Resources(cpus=1, cpus_at_least=True, arch="arm64"))])
    assert arm.outcome == WAITING and "provisioning node" in arm.reason
    assert [o.instance_type for _, o, _ in prov.calls] == ["m6i.large", "m7g.large"]
