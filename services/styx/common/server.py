"""Server bootstrap shared by every service.

``start_server`` builds a gRPC server with authentication, error mapping, health checking
and reflection; ``run_until_signal`` serves until SIGTERM/SIGINT and then stops cleanly
within a deadline (``SHUTDOWN_DEADLINE_S``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from styx.common import reflection
from styx.common.auth import Caller, allowed, identify
from styx.common.errors import PermissionDenied, StyxError, Unauthenticated
from styx.common.idempotency import RequestLog
from styx.common.ids import new_id
from styx.common.keepalive import DEFAULT as DEFAULT_KEEPALIVE
from styx.common.keepalive import Keepalive
from styx.common.metrics import observe_rpc
from styx.common.status import internal_status, to_status
from styx.common.validation import validate

log = logging.getLogger(__name__)

# Standard services any client (load balancers, grpcurl) may call without a token.
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _abort_handler(exc: StyxError) -> grpc.RpcMethodHandler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort_with_status(to_status(exc))

    return grpc.unary_unary_rpc_method_handler(abort)


class GuardInterceptor(grpc.ServerInterceptor):
    """Checks the bearer token (the shared one, or a node token on the agents' RPCs only) and
    maps exceptions to gRPC status codes.

    ``StyxError`` becomes its own code and message. Any other exception becomes INTERNAL
    with a reference id that also appears in the log next to the traceback.
    """

    def __init__(self, token: str, requests: RequestLog | None = None) -> None:
        self._token = token
        self._requests = requests

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        node = ""
        if self._token and not method.startswith(_OPEN_SERVICES):
            metadata = dict(handler_call_details.invocation_metadata or ())
            given = str(metadata.get("authorization", ""))
            presented = given[len("Bearer ") :] if given.startswith("Bearer ") else ""
            caller: Caller | None = identify(self._token, presented) if presented else None
            if caller is None or not allowed(caller, method):
                return _abort_handler(
                    Unauthenticated(
                        "missing or wrong token: send 'authorization: Bearer <token>' metadata "
                        "(the sky CLI reads STYX_TOKEN or the local control plane's token file)",
                        reason="BAD_TOKEN" if presented else "NO_TOKEN",
                    )
                )
            node = caller.node_id
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            fn = handler.unary_unary
            if self._requests is not None and _has_request_id(method):
                fn = _deduplicated(fn, method, self._requests)
            return handler._replace(unary_unary=_guard_unary(fn, method, node))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_guard_stream(handler.unary_stream, method, node))
        return handler


def _method_descriptor(method: str) -> Any:
    """The MethodDescriptor of "/package.Service/Method"; None for methods not in the pool."""
    service, _, name = method.lstrip("/").partition("/")
    try:
        return descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    except KeyError:
        return None


def _has_request_id(method: str) -> bool:
    md = _method_descriptor(method)
    return md is not None and "request_id" in md.input_type.fields_by_name


def _deduplicated(
    fn: Callable[[Any, grpc.ServicerContext], Any], method: str, requests: RequestLog
) -> Callable[..., Any]:
    """``fn`` behind the request-id log (styx.v1.MethodRules): repeats get the first answer."""
    from styx.v1 import rules_pb2

    md = _method_descriptor(method)
    options = md.GetOptions()
    replay_in_handler = (
        options.HasExtension(rules_pb2.method_rules) and options.Extensions[rules_pb2.method_rules].replay_in_handler
    )
    response_class = message_factory.GetMessageClass(md.output_type)

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        request_id = request.request_id
        if not request_id:  # refused by validation where required; nothing to key on otherwise
            return fn(request, context)
        payload = type(request)()
        payload.CopyFrom(request)
        payload.ClearField("request_id")
        key = requests.digest(method, payload.SerializeToString(deterministic=True))
        found = requests.lookup(method, request_id, key)
        if found.replay is not None:
            return response_class.FromString(found.replay)
        response = fn(request, context)
        if not found.repeat:
            requests.record(method, request_id, key, None if replay_in_handler else response.SerializeToString())
        return response

    return call


def _check_node(request: Any, node: str) -> None:
    """A node-scoped token may only name its own node: node A cannot heartbeat as node B,
    take B's work or report B's tasks."""
    if node and "node_id" in request.DESCRIPTOR.fields_by_name and request.node_id != node:
        raise PermissionDenied(f"node_id: this token belongs to node {node!r}, not {request.node_id!r}")


def _fail(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, StyxError):
        context.abort_with_status(to_status(exc))
    ref = new_id("err")
    log.error("unexpected error in %s", method, exc_info=exc, extra={"ref": ref})
    context.abort_with_status(internal_status(ref))


def _admit(request: Any, node: str) -> None:
    """What every request passes before its handler: the proto's rules, then the node scope."""
    validate(request)
    _check_node(request, node)


def _guard_unary(fn: Callable[[Any, grpc.ServicerContext], Any], method: str, node: str) -> Callable[..., Any]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            _admit(request, node)
            return fn(request, context)
        except Exception as exc:
            if _is_abort(context):
                raise
            _fail(context, exc, method)
        finally:
            observe_rpc(method, _code_name(context), started)

    return wrapper


def _guard_stream(
    fn: Callable[[Any, grpc.ServicerContext], Iterable[Any]], method: str, node: str
) -> Callable[..., Any]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            _admit(request, node)
            yield from fn(request, context)
        except Exception as exc:
            if _is_abort(context):
                raise
            _fail(context, exc, method)
        finally:
            observe_rpc(method, _code_name(context), started)

    return wrapper


def _code_name(context: grpc.ServicerContext) -> str:
    code = context.code()
    return "OK" if code is None else code.name


def _is_abort(context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after setting a non-OK code: let it through.
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK


@dataclass
class RunningServer:
    """A started server: the grpc object, the bound port and the health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace: float = 5.0) -> None:
        """Mark NOT_SERVING, then stop accepting calls and wait up to ``grace`` seconds."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1)


def start_server(
    host: str,
    port: int,
    token: str,
    register: Callable[[grpc.Server], Iterable[str]],
    max_workers: int = 64,
    tls: tuple[bytes, bytes] | None = None,
    requests: RequestLog | None = None,
    keepalive: Keepalive = DEFAULT_KEEPALIVE,
) -> RunningServer:
    """Start serving. ``register`` adds servicers and returns their full service names.
    ``tls`` (key PEM, certificate chain PEM) serves TLS instead of plaintext. ``requests``
    deduplicates the mutating RPCs by request_id (styx.common.idempotency); ``keepalive``
    is the HTTP/2 ping policy (styx.common.keepalive)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[GuardInterceptor(token, requests)],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            *keepalive.server_options(),
        ],
    )
    names = list(register(server))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable([*names, health.SERVICE_NAME], server)
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    server.start()
    return RunningServer(server=server, port=bound, health=health_servicer)


def write_ready_file(path: Path | None, host: str, port: int) -> None:
    """Atomically write ``host:port`` so a launcher polling the file never reads half of it."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{host}:{port}\n")
    tmp.replace(path)


# A service must be gone within 2 s of SIGTERM, under load too: in-flight unary calls get
# SERVER_GRACE_S to finish (streams are cancelled then, clients reconnect elsewhere), the
# service's own stop work runs meanwhile, and the process exits by SHUTDOWN_DEADLINE_S.
SERVER_GRACE_S = 1.0
SHUTDOWN_DEADLINE_S = 1.6


def run_until_signal(
    running: RunningServer,
    on_stop: Callable[[], None] = lambda: None,
    close: Callable[[], None] = lambda: None,
    deadline_s: float = SHUTDOWN_DEADLINE_S,
    hard_exit: bool = True,
) -> None:
    """Block until SIGTERM or SIGINT, then stop within ``deadline_s``.

    In order, each bounded by what is left of the deadline: mark NOT_SERVING and stop
    accepting calls while in-flight ones get ``SERVER_GRACE_S``; at the same time run
    ``on_stop`` (the service's loops: they wait on events, so they notice at once; what
    they leave unfinished is in the store and resumed by the next start or replica);
    then ``close`` (dispose of the store's connections) once no call is running.

    ``hard_exit``: end the process with ``os._exit(0)`` after flushing the logs. A plain
    return would let the interpreter join the gRPC executor's threads at exit, and one
    handler stuck in a slow peer or cloud call would hold the process past its deadline;
    nothing is lost by not waiting for it, as every state change is committed first.
    """
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        log.info("received signal %d, shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stop.wait()
    shutdown(running, on_stop, close, deadline_s)
    if hard_exit:
        logging.shutdown()
        os._exit(0)


def shutdown(
    running: RunningServer, on_stop: Callable[[], None], close: Callable[[], None], deadline_s: float
) -> float:
    """Stop the server and the service as ``run_until_signal`` describes; returns seconds taken."""
    started = time.monotonic()

    def left() -> float:
        return max(0.0, deadline_s - (time.monotonic() - started))

    running.health.enter_graceful_shutdown()
    drained = running.server.stop(min(SERVER_GRACE_S, deadline_s))
    _bounded("stop", on_stop, left())
    if not drained.wait(left()):
        log.warning("calls still running at the shutdown deadline; leaving them")
    _bounded("close", close, left())
    took = time.monotonic() - started
    log.info("stopped", extra={"shutdown_s": round(took, 3)})
    return took


def _bounded(what: str, fn: Callable[[], None], timeout_s: float) -> None:
    """Run ``fn`` on a daemon thread and wait at most ``timeout_s`` for it."""

    def target() -> None:
        try:
            fn()
        except Exception:
            log.exception("%s failed during shutdown", what)

    thread = threading.Thread(target=target, name=f"shutdown-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning("%s did not finish by the shutdown deadline; leaving it", what)
