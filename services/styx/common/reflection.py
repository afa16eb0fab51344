"""Server reflection, v1 and v1alpha, with every service, method and message resolvable.

grpcio-reflection serves only ``grpc.reflection.v1alpha`` and looks symbols up with the
descriptor pool's ``FindFileContainingSymbol``, which does not know method names
(``styx.v1.Scheduler.SubmitJob``), so ``grpcurl describe`` of a method fails. This
servicer adds the method lookup, and is also served as ``grpc.reflection.v1``: the v1
messages are the v1alpha ones under a new package (same fields and numbers), so the
v1alpha stubs read and write them unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (reflection.SERVICE_NAME, V1_SERVICE_NAME)


class _Servicer(reflection.ReflectionServicer):  # type: ignore[misc]
    """grpcio-reflection's servicer plus method symbols."""

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            service, _, method = fully_qualified_name.rpartition(".")
            try:
                found = self._pool.FindServiceByName(service)
            except KeyError:
                found = None
            if found is not None and method in found.methods_by_name:
                fully_qualified_name = service
        return super()._file_containing_symbol(request, fully_qualified_name)


def enable(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection (v1 and v1alpha) listing ``service_names`` and the reflection services."""
    servicer = _Servicer([*service_names, *SERVICE_NAMES])
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}) for name in SERVICE_NAMES]
    )
