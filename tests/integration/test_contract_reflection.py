"""Reflection v1 and v1alpha resolve every service, method and message, as grpcurl needs;
health answers per service name.

The client here does what ``grpcurl describe styx.v1.Scheduler.SubmitJob`` does: ask for
the file containing the symbol, build a descriptor pool from the returned files alone,
and find the method and its message types in it.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from contract_plane import Plane, serve_plane
from styx.v1 import agent_pb2, broker_pb2, scheduler_pb2

SERVED = [
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"],
    agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"],
    broker_pb2.DESCRIPTOR.services_by_name["ResourceBroker"],
]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with serve_plane(tmp_path_factory.mktemp("refl")) as p:
        yield p


def _ask(plane: Plane, version: str, **request: object) -> reflection_pb2.ServerReflectionResponse:
    # No token: reflection is open, like health. A fresh channel without the token interceptor.
    channel = grpc.insecure_channel(plane.endpoint)
    try:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        (reply,) = list(call(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10))
        return reply
    finally:
        channel.close()


def _pool_for_symbol(plane: Plane, version: str, symbol: str) -> descriptor_pool.DescriptorPool:
    reply = _ask(plane, version, file_containing_symbol=symbol)
    assert reply.WhichOneof("message_response") == "file_descriptor_response", (symbol, reply)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b) for b in reply.file_descriptor_response.file_descriptor_proto
    ]
    pool = descriptor_pool.DescriptorPool()
    pending = {f.name: f for f in files}
    while pending:  # add in dependency order
        for name, proto in list(pending.items()):
            if all(dep not in pending for dep in proto.dependency):
                pool.Add(proto)
                del pending[name]
    return pool


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_list_services_names_every_service(plane: Plane, version: str) -> None:
    names = {s.name for s in _ask(plane, version, list_services="").list_services_response.service}
    assert {s.full_name for s in SERVED} <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_every_method_and_message_resolves_by_symbol(plane: Plane, version: str) -> None:
    for service in SERVED:
        for method in service.methods:
            pool = _pool_for_symbol(plane, version, method.full_name)  # grpcurl describe <method>
            found = pool.FindServiceByName(service.full_name).methods_by_name[method.name]
            assert found.input_type.full_name == method.input_type.full_name
            assert pool.FindMessageTypeByName(method.output_type.full_name).fields is not None
    for message in scheduler_pb2.DESCRIPTOR.message_types_by_name.values():
        assert _pool_for_symbol(plane, version, message.full_name).FindMessageTypeByName(message.full_name)


def test_an_unknown_symbol_is_not_found(plane: Plane) -> None:
    reply = _ask(plane, "v1", file_containing_symbol="styx.v1.Scheduler.NoSuchMethod")
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_health_answers_per_service_name(plane: Plane) -> None:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(plane.endpoint))
    for name in ["", *(s.full_name for s in SERVED)]:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="styx.v1.Nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
