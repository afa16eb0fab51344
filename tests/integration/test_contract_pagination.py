"""AIP-158 pagination on every List RPC: page_size / page_token in, next_page_token out.

ListJobs and ListTasks page by their own cursors (submission time, event seq); the other
List RPCs by styx.common.pagination.

Checked on the descriptors for every List method of every service, and over gRPC on the
real broker servicer: pages walk the whole list once, in order; a token is refused with
other filters, garbage is refused, and page_size has its documented bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from contract_plane import Plane, serve_plane
from styx.common.errors import InvalidArgument
from styx.common.offers import Offer
from styx.common.pagination import page
from styx.common.resources import Capacity
from styx.v1 import broker_pb2, common_pb2, provisioner_pb2, scheduler_pb2


def test_every_list_rpc_pages() -> None:
    listed = [
        method
        for module in (scheduler_pb2, broker_pb2, provisioner_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if method.name.startswith("List")
    ]
    assert len(listed) >= 10
    for method in listed:
        assert {"page_size", "page_token"} <= set(method.input_type.fields_by_name), method.full_name
        assert "next_page_token" in method.output_type.fields_by_name, method.full_name


def test_one_response_message_per_list_or_get_catalog_rpc() -> None:
    used: dict[str, list[str]] = {}
    for module in (scheduler_pb2, broker_pb2, provisioner_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.output_type.name.endswith("Response"):
                    used.setdefault(method.output_type.name, []).append(method.name)
    shared = {name: methods for name, methods in used.items() if len(methods) > 1}
    assert not shared, shared  # GetProviderCatalog used to answer with ListOffersResponse


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    with serve_plane(tmp_path) as p:
        for i in range(5):
            p.broker.register_node(f"node-{i}", "local", f"pid-{i}", Capacity(2, 4))
        yield p


def test_list_nodes_walks_in_pages(plane: Plane) -> None:
    seen, token, pages = [], "", 0
    while True:
        reply = plane.brk.ListNodes(broker_pb2.ListNodesRequest(page_size=2, page_token=token), timeout=5)
        seen += [n.node_id for n in reply.nodes]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == [f"node-{i}" for i in range(5)] and pages == 3
    everything = plane.brk.ListNodes(broker_pb2.ListNodesRequest(), timeout=5)
    assert len(everything.nodes) == 5 and not everything.next_page_token


def test_a_token_is_refused_with_other_filters_or_when_forged(plane: Plane) -> None:
    first = plane.brk.ListNodes(broker_pb2.ListNodesRequest(page_size=2), timeout=5)
    with pytest.raises(grpc.RpcError) as other:
        plane.brk.ListNodes(
            broker_pb2.ListNodesRequest(page_size=2, page_token=first.next_page_token, include_lost=True), timeout=5
        )
    assert other.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token: made for a request with other filters" in (other.value.details() or "")
    with pytest.raises(grpc.RpcError) as forged:
        plane.brk.ListNodes(broker_pb2.ListNodesRequest(page_token="not-a-token"), timeout=5)
    assert forged.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as huge:
        plane.brk.ListNodes(broker_pb2.ListNodesRequest(page_size=10001), timeout=5)
    assert huge.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "page_size" in (huge.value.details() or "")


def test_catalogs_and_accelerators_page_too(plane: Plane) -> None:
    gpus = ("A100", "H100", "L4", "T4")
    offers = [
        Offer(provider, "r1", "", f"{provider}-{gpu}", 8, 32, gpu, 1, 16, price_per_hour=1.0)
        for provider in ("aws", "gcp", "azure")
        for gpu in gpus
    ]
    plane.broker.import_catalog(offers, request_id="import-1")
    whole = [c.provider for c in plane.brk.ListCatalogs(broker_pb2.ListCatalogsRequest(), timeout=5).catalogs]
    assert len(whole) >= 2
    one = plane.brk.ListCatalogs(broker_pb2.ListCatalogsRequest(page_size=1), timeout=5)
    rest = plane.brk.ListCatalogs(broker_pb2.ListCatalogsRequest(page_token=one.next_page_token), timeout=5)
    assert [c.provider for c in one.catalogs] + [c.provider for c in rest.catalogs] == sorted(whole)
    accels = plane.brk.ListAccelerators(
        broker_pb2.ListAcceleratorsRequest(page_size=3, include_disabled=True), timeout=5
    )
    more = plane.brk.ListAccelerators(
        broker_pb2.ListAcceleratorsRequest(page_token=accels.next_page_token, include_disabled=True), timeout=5
    )
    assert [a.name for a in (*accels.accelerators, *more.accelerators)] == sorted(gpus)


def test_a_continuation_neither_repeats_nor_skips_when_items_come_and_go() -> None:
    request = broker_pb2.ListNodesRequest(page_size=2)
    items = [SimpleNamespace(node_id=n) for n in ("a", "c", "e", "g")]
    first, token = page(items, request, lambda i: i.node_id)
    assert [i.node_id for i in first] == ["a", "c"]
    # "c" is gone and "b" and "d" arrived before the next call: continue after "c" anyway.
    changed = [SimpleNamespace(node_id=n) for n in ("a", "b", "d", "e", "g")]
    request.page_token = token
    second, _ = page(changed, request, lambda i: i.node_id)
    assert [i.node_id for i in second] == ["d", "e"]
    with pytest.raises(InvalidArgument, match="page_size: at most 10000"):
        page(items, broker_pb2.ListNodesRequest(page_size=20000), lambda i: i.node_id)


def test_list_jobs_pages_through_every_job_once(tmp_path: Path) -> None:
    with serve_plane(tmp_path) as plane:
        submitted = []
        for i in range(5):
            job = scheduler_pb2.JobSpec(name=f"j{i}", tasks=[common_pb2.TaskSpec(name="t", run="true")])
            reply = plane.sched.SubmitJob(scheduler_pb2.SubmitJobRequest(request_id=f"r{i}", job=job), timeout=10)
            submitted.append(reply.job_id)
        seen, token, pages = [], "", 0
        while True:
            page = plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(page_size=2, page_token=token), timeout=10)
            seen += [j.job_id for j in page.jobs]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert pages == 3 and sorted(seen) == sorted(submitted) and len(set(seen)) == 5
        everything = plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(), timeout=10)
        assert [j.job_id for j in everything.jobs] == seen and everything.next_page_token == ""
        assert len(plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(limit=3), timeout=10).jobs) == 3
        for bad in ("garbage", "job:nan:j-1", "job:1.0:"):
            with pytest.raises(grpc.RpcError) as err:
                plane.sched.ListJobs(scheduler_pb2.ListJobsRequest(page_token=bad), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.value.details()
