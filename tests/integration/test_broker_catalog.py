"""styx-broker as a real process with a real provisioner: catalog import,
Optimize, ListCatalogs, ListAccelerators, ListProvisioningAttempts, and restarts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from helpers import ServiceProcess, start_service
from styx.common.clients import open_channel
from styx.v1 import broker_pb2, broker_pb2_grpc, common_pb2

TOKEN = "test-token-broker-catalog"


@pytest.fixture
def plane(tmp_path: Path, styx_home: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    env = dict(os.environ, STYX_TOKEN=TOKEN, STYX_LOCAL_NODE_CPUS="2", STYX_LOCAL_NODE_MEMORY_GIB="4")
    prov = start_service(
        "styx.provisioner", ["--port", "0", "--scheduler", "127.0.0.1:9", "--broker", "127.0.0.1:9"], tmp_path, env
    )
    db = f"sqlite:///{tmp_path / 'broker.db'}"
    args = ["--port", "0", "--provisioner", prov.endpoint, "--db-url", db]
    broker = start_service("styx.broker", args, tmp_path, env)
    yield broker, prov
    assert broker.stop() == 0, broker.log_text()
    assert prov.stop() == 0, prov.log_text()


def _stub(service: ServiceProcess) -> broker_pb2_grpc.ResourceBrokerStub:
    return broker_pb2_grpc.ResourceBrokerStub(open_channel(service.endpoint, TOKEN))


def _offer(provider: str, itype: str, cpus: float, price: float, acc: str = "", n: int = 0) -> common_pb2.Offer:
    return common_pb2.Offer(
        provider=provider,
        region="r1",
        zone="r1-a",
        instance_type=itype,
        cpus=cpus,
        memory_gib=cpus * 4,
        accelerator_name=acc,
        accelerator_count=n,
        price_per_hour=price,
        spot_price_per_hour=price / 3,
    )


def test_catalog_rpcs_over_grpc(plane, tmp_path):
    broker, prov = plane
    stub = _stub(broker)
    # The built-in catalog is there from the start; its cloud providers have no credentials here.
    catalogs = {c.provider: c for c in stub.ListCatalogs(broker_pb2.ListCatalogsRequest(), timeout=10).catalogs}
    assert {"aws", "gcp", "azure"} <= set(catalogs) and not catalogs["aws"].imported
    a100 = common_pb2.ResourceRequest(accelerators=[common_pb2.AcceleratorRequest(name="A100", count=8)])
    answer = stub.Optimize(broker_pb2.OptimizeRequest(resources=a100), timeout=10)
    assert list(answer.offers) == []
    reasons = {r.family: r.reason for r in answer.rejections}
    # The provider's own reason reaches the user (the aws plugin loads but finds no credentials).
    assert reasons["aws"].startswith("provider disabled (no AWS credentials")
    what_if = stub.Optimize(broker_pb2.OptimizeRequest(resources=a100, include_disabled=True, limit=3), timeout=10)
    assert len(what_if.offers) == 3 and not what_if.offers[0].provider_enabled
    assert what_if.offers[0].offer.accelerator_count == 8 and what_if.request_summary == "A100:8"
    # The local host offer is ranked (price 0) for what it can hold.
    small = common_pb2.ResourceRequest(cpus=1, cpus_at_least=True)
    ranked = stub.Optimize(broker_pb2.OptimizeRequest(resources=small, num_nodes=1), timeout=10).offers
    assert ranked[0].offer.provider == "local" and ranked[0].hourly_price == 0

    # Import: replaces the aws catalog only.
    offers = [_offer("aws", f"m.{i}", 2 + i, 0.1 * (i + 1)) for i in range(3)]
    offers.append(_offer("aws", "p.big", 96, 30.0, "H100", 8))
    reply = stub.ImportCatalog(broker_pb2.ImportCatalogRequest(request_id="imp-1", offers=offers), timeout=30)
    assert (reply.count, list(reply.providers)) == (4, ["aws"])
    with pytest.raises(grpc.RpcError) as err:
        stub.ImportCatalog(
            broker_pb2.ImportCatalogRequest(request_id="imp-2", offers=[common_pb2.Offer(provider="aws")]), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "offers[0].region" in err.value.details()

    accels = stub.ListAccelerators(broker_pb2.ListAcceleratorsRequest(name="h100", include_disabled=True), timeout=10)
    (h100,) = accels.accelerators
    aws = [o for o in h100.offers if o.cheapest.provider == "aws"]
    assert [(o.count, o.cheapest.instance_type, o.cheapest.price_per_hour) for o in aws] == [(8, "p.big", 30.0)]
    with pytest.raises(grpc.RpcError) as err:
        stub.Optimize(broker_pb2.OptimizeRequest(resources=common_pb2.ResourceRequest(infra="a/b/c/d")), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(stub.ListProvisioningAttempts(broker_pb2.ListProvisioningAttemptsRequest(), timeout=10).attempts) == []

    # The import survives a restart.
    assert broker.stop() == 0, broker.log_text()
    env = dict(os.environ, STYX_TOKEN=TOKEN)
    db = f"sqlite:///{tmp_path / 'broker.db'}"
    again = start_service(
        "styx.broker", ["--port", "0", "--provisioner", prov.endpoint, "--db-url", db], tmp_path, env, name="b2"
    )
    try:
        catalogs = {c.provider: c for c in _stub(again).ListCatalogs(broker_pb2.ListCatalogsRequest()).catalogs}
        assert (catalogs["aws"].offers, catalogs["aws"].imported) == (4, True)
        assert catalogs["aws"].imported_at.seconds > 0
    finally:
        assert again.stop() == 0, again.log_text()
