"""AIP-155 request ids: every mutating RPC acts once per request_id, across restarts and replicas.

The first part runs every method of every styx.v1 service whose request has a request_id
through the real server interceptor, with handlers that count their calls (the
deduplication is the interceptor's, the same for every method). The second part runs the
real scheduler and broker: a repeated SubmitJob after a restart or on another replica
returns the first job, a reused id with another payload is refused.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from sqlalchemy import func, select

from contract_plane import TOKEN, serve_plane
from styx.common.clients import open_channel
from styx.common.clock import FakeClock
from styx.common.errors import AlreadyExists
from styx.common.idempotency import RETENTION_S, Found, RequestLog
from styx.common.server import start_server
from styx.common.status import details_of
from styx.common.store import make_engine
from styx.scheduler import tables
from styx.v1 import agent_pb2, broker_pb2, common_pb2, provisioner_pb2, scheduler_pb2

FILES = (scheduler_pb2, broker_pb2, provisioner_pb2, agent_pb2)


def _mutating() -> list[MethodDescriptor]:
    return [
        method
        for module in FILES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if "request_id" in method.input_type.fields_by_name
    ]


def _fill(desc: Descriptor, message: Any, variant: str) -> None:
    """Set every required field (recursively) to a valid value; ``variant`` varies the strings."""
    from styx.v1 import rules_pb2

    for fd in desc.fields:
        options = fd.GetOptions()
        if not (options.HasExtension(rules_pb2.rules) and options.Extensions[rules_pb2.rules].required):
            continue
        if fd.name == "request_id":
            continue
        if fd.type == FieldDescriptor.TYPE_STRING:
            setattr(message, fd.name, f"{variant}1")
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and fd.is_repeated:
            _fill(fd.message_type, getattr(message, fd.name).add(), variant)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, fd.name).SetInParent()
            _fill(fd.message_type, getattr(message, fd.name), variant)


def _vary(message: Any, variant: str) -> bool:
    """Set the first free-text string field found depth-first (not request_id) to ``variant``."""
    from styx.v1 import rules_pb2

    for fd in message.DESCRIPTOR.fields:
        rules = fd.GetOptions().Extensions[rules_pb2.rules]
        if fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated and fd.name != "request_id":
            if not rules.pattern:
                setattr(message, fd.name, f"{variant}1")
                return True
        elif (
            fd.type == FieldDescriptor.TYPE_MESSAGE
            and not fd.is_repeated
            and message.HasField(fd.name)
            and _vary(getattr(message, fd.name), variant)
        ):
            return True
    for fd in message.DESCRIPTOR.fields:  # nothing to vary yet: add an element to a repeated message
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.is_repeated and not fd.message_type.GetOptions().map_entry:
            items = getattr(message, fd.name)
            if _vary(items[0] if items else items.add(), variant):
                return True
    return False


def _request(method: MethodDescriptor, request_id: str, variant: str) -> Any:
    message = message_factory.GetMessageClass(method.input_type)(request_id=request_id)
    _fill(method.input_type, message, variant)
    _vary(message, variant)
    return message


class Counting:
    """Generic handlers for every mutating method that count calls and answer a fresh response."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method in _mutating():
            response_class = message_factory.GetMessageClass(method.output_type)
            by_service.setdefault(method.containing_service.full_name, {})[method.name] = (
                grpc.unary_unary_rpc_method_handler(
                    self._handler(method.full_name, response_class),
                    request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
                    response_serializer=response_class.SerializeToString,
                )
            )
        return [grpc.method_handlers_generic_handler(name, methods) for name, methods in by_service.items()]

    def _handler(self, name: str, response_class: Any) -> Any:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self.lock:
                self.calls[name] += 1
                count = self.calls[name]
            response = response_class()
            # Something that differs between calls, to tell a replay from a second run.
            for fd in response.DESCRIPTOR.fields:
                if fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated:
                    setattr(response, fd.name, f"call-{count}")
                    break
            return response

        return handle


@pytest.fixture(scope="module")
def counting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Counting, grpc.Channel]]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('ids') / 'requests.db'}")
    tables.metadata.create_all(engine, tables=[tables.requests])
    counting = Counting()

    def register(server: grpc.Server) -> list[str]:
        server.add_generic_rpc_handlers(counting.handlers())
        return sorted({m.containing_service.full_name for m in _mutating()})

    running = start_server("127.0.0.1", 0, TOKEN, register, max_workers=8, requests=RequestLog(engine, tables.requests))
    channel = open_channel(f"127.0.0.1:{running.port}", TOKEN)
    yield counting, channel
    channel.close()
    running.stop(0)
    engine.dispose()


def _call(channel: grpc.Channel, method: MethodDescriptor, request: Any) -> Any:
    response_class = message_factory.GetMessageClass(method.output_type)
    fn = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_class.FromString,
    )
    return fn(request, timeout=10)


def test_the_mutating_methods_are_the_expected_ones() -> None:
    names = {m.full_name for m in _mutating()}
    assert len(names) == 17 and "styx.v1.Scheduler.CancelJob" in names and "styx.v1.Provisioner.Stop" in names


@pytest.mark.parametrize("method", _mutating(), ids=lambda m: m.full_name)
def test_each_mutating_rpc_acts_once_per_request_id(counting, method: MethodDescriptor) -> None:
    handlers, channel = counting
    request_id = str(uuid.uuid4())
    assert _request(method, request_id, "a") != _request(method, request_id, "b")
    first = _call(channel, method, _request(method, request_id, "a"))
    calls = handlers.calls[method.full_name]
    again = _call(channel, method, _request(method, request_id, "a"))
    replayed = method.full_name != "styx.v1.ResourceBroker.JoinNode"  # JoinNode's reply holds a secret
    if replayed:
        assert again == first and handlers.calls[method.full_name] == calls
    else:
        assert handlers.calls[method.full_name] == calls + 1  # the handler answers the repeat itself
    with pytest.raises(grpc.RpcError) as err:
        _call(channel, method, _request(method, request_id, "b"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert request_id in err.value.details() and method.name in err.value.details()
    assert details_of(err.value).reason == "REQUEST_ID_REUSED"
    with pytest.raises(grpc.RpcError) as missing:
        _call(channel, method, _request(method, "", "a"))
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in missing.value.details()


def _submit(stub: Any, request_id: str, run: str = "true") -> scheduler_pb2.SubmitJobResponse:
    job = scheduler_pb2.JobSpec(tasks=[common_pb2.TaskSpec(name="t", run=run)])
    return stub.SubmitJob(scheduler_pb2.SubmitJobRequest(request_id=request_id, job=job), timeout=10)


def _count_jobs(stub: Any) -> int:
    return len(stub.ListJobs(scheduler_pb2.ListJobsRequest(), timeout=10).jobs)


def test_submit_job_repeat_survives_a_restart_and_another_payload_is_refused(tmp_path: Path) -> None:
    with serve_plane(tmp_path) as plane:
        first = _submit(plane.sched, "rid-1")
    with serve_plane(tmp_path) as plane:
        assert _submit(plane.sched, "rid-1").job_id == first.job_id
        with pytest.raises(grpc.RpcError) as err:
            _submit(plane.sched, "rid-1", run="rm -rf /tmp/other")
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert _count_jobs(plane.sched) == 1


def test_two_replicas_share_the_request_ids(tmp_path: Path) -> None:
    with serve_plane(tmp_path) as a, serve_plane(tmp_path) as b:
        first = _submit(a.sched, "rid-r")
        assert _submit(b.sched, "rid-r").job_id == first.job_id
        job = scheduler_pb2.CancelJobRequest(request_id="cancel-1", job_id=first.job_id)
        cancelled = b.sched.CancelJob(job, timeout=10)
        assert a.sched.CancelJob(job, timeout=10) == cancelled
        assert _count_jobs(a.sched) == 1


def test_cancel_job_without_a_request_id_is_refused(tmp_path: Path) -> None:
    with serve_plane(tmp_path) as plane:
        job_id = _submit(plane.sched, "rid-c").job_id
        with pytest.raises(grpc.RpcError) as err:
            plane.sched.CancelJob(scheduler_pb2.CancelJobRequest(job_id=job_id), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details_of(err.value).violations[0][0] == "request_id"


def test_ids_are_kept_a_day_then_forgotten(tmp_path: Path) -> None:
    clock = FakeClock()
    with serve_plane(tmp_path, clock=clock) as plane:
        first = _submit(plane.sched, "rid-d")
        clock.advance(RETENTION_S - 60)
        assert _submit(plane.sched, "rid-d").job_id == first.job_id
        clock.advance(120)
        # Past retention the id is free again; the scheduler's own submission key still
        # holds it (jobs.request_id), so the same job comes back rather than a second one.
        assert _submit(plane.sched, "rid-d").job_id == first.job_id
        with plane.scheduler._engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(tables.requests)).scalar_one()
        assert rows == 1


def test_a_call_cut_off_records_nothing_and_its_retry_acts(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    tables.metadata.create_all(engine, tables=[tables.requests])
    log = RequestLog(engine, tables.requests, FakeClock())
    assert log.lookup("/m", "id", "d1") == Found()  # a first call that then dies records nothing
    assert log.lookup("/m", "id", "d1") == Found()  # so its retry acts
    log.record("/m", "id", "d1", b"reply")
    log.record("/m", "id", "d1", b"a concurrent duplicate's reply")  # the first record wins
    assert log.lookup("/m", "id", "d1") == Found(repeat=True, replay=b"reply")
    with pytest.raises(AlreadyExists):
        log.lookup("/m", "id", "d2")
    engine.dispose()
