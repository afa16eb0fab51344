"""The agent's calls to the control plane: broker (register, heartbeat) and scheduler
(work stream, status, logs), with deadlines, retries and reconnects.

Every unary call has a deadline (``DEFAULT_TIMEOUT_S``). Calls are retried with backoff
on UNAVAILABLE and DEADLINE_EXCEEDED, which is safe because every one of them is
idempotent by contract (RegisterNode on node_id, ReportTaskStatus on its request_id,
AppendLogs on its offset). Once the agent is stopping a call gets one last try. Other
codes are raised as ``Rejected`` so the agent core stays free of grpc.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from styx.agent import convert
from styx.agent.core import BrokerDown, NodeRegistration, Renewal
from styx.agent.runner import Assignment, Cancellation, StatusReport
from styx.common.clients import DEFAULT_TIMEOUT_S, open_channel
from styx.common.ids import new_id
from styx.v1 import agent_pb2, agent_pb2_grpc, broker_pb2, broker_pb2_grpc

log = logging.getLogger(__name__)

WORKDIR_TIMEOUT_S = 60.0
# ABORTED: the same request_id is still being handled (a retry after a lost reply); ask again.
_RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)
T = TypeVar("T")


class Rejected(Exception):
    """The control plane answered with a non-retryable status."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class Stopped(Exception):
    """The agent is stopping and the call could not be completed."""


class ControlPlane:
    """Stubs for the broker and the scheduler's AgentGateway, sharing one stop event."""

    def __init__(self, scheduler: str, broker: str, token: str, stop: threading.Event) -> None:
        self._stop = stop
        self._channels = [open_channel(scheduler, token), open_channel(broker, token)]
        self._gateway = agent_pb2_grpc.AgentGatewayStub(self._channels[0])
        self._broker = broker_pb2_grpc.ResourceBrokerStub(self._channels[1])
        self._stream: Any = None
        self._stream_lock = threading.Lock()

    def close(self) -> None:
        """Cancel the work stream and close the channels."""
        self.cancel_stream()
        for channel in self._channels:
            channel.close()

    # -- unary calls -------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], request: Any, max_backoff_s: float = 5.0) -> T:
        return call_with_retry(self._stop, what, fn, request, max_backoff_s)

    def register(self, node: NodeRegistration) -> None:
        """RegisterNode, retrying until the broker answers."""
        request = broker_pb2.RegisterNodeRequest(
            request_id=new_id("reg"),
            node_id=node.node_id,
            provider=node.provider,
            instance_id=node.instance_id,
            capacity=convert.capacity_to_proto(node.capacity),
            region=node.region,
            zone=node.zone,
            instance_type=node.instance_type,
            labels=dict(node.labels),
            address=node.address,
        )
        self._call("RegisterNode", self._broker.RegisterNode, request, max_backoff_s=10.0)

    def heartbeat(self, node_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Renewal:
        """One Heartbeat (no retry: the next beat is the retry): the broker's ``known`` and lease."""
        try:
            response = self._broker.Heartbeat(broker_pb2.HeartbeatRequest(node_id=node_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            details = str(exc.details())
            if exc.code() == grpc.StatusCode.UNAVAILABLE and "connection refused" in details.lower():
                raise BrokerDown(details) from exc
            raise Rejected(exc.code().name, details) from exc
        return Renewal(bool(response.known), float(response.lease_seconds))

    def deregister(self, node_id: str, reason: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Tell the broker this node is going away (one try: the lease covers a miss)."""
        request = broker_pb2.DeregisterNodeRequest(request_id=new_id("dereg"), node_id=node_id, reason=reason)
        try:
            self._broker.DeregisterNode(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            raise Rejected(exc.code().name, str(exc.details())) from exc

    def report_status(self, node_id: str, report: StatusReport) -> None:
        """ReportTaskStatus, retried on transient errors."""
        self._call("ReportTaskStatus", self._gateway.ReportTaskStatus, convert.status_to_proto(node_id, report))

    def append_logs(self, node_id: str, task_id: str, attempt: int, offset: int, data: bytes, rank: int = 0) -> int:
        """AppendLogs at ``offset`` (of one rank's log) as ``node_id``; returns where the next append starts."""
        request = agent_pb2.AppendLogsRequest(
            task_id=task_id, attempt=attempt, offset=offset, data=data, rank=rank, node_id=node_id
        )
        return int(self._call("AppendLogs", self._gateway.AppendLogs, request).next_offset)

    def get_workdir(self, node_id: str, job_id: str) -> bytes:
        """The job's workdir archive via the GetWorkdir stream, retried on transient errors."""

        def fetch(request: agent_pb2.GetWorkdirRequest, timeout: float) -> bytes:
            # A large archive takes longer than a unary call: allow a minute per attempt.
            chunks = self._gateway.GetWorkdir(request, timeout=max(timeout, WORKDIR_TIMEOUT_S))
            return b"".join(chunk.data for chunk in chunks)

        return self._call("GetWorkdir", fetch, agent_pb2.GetWorkdirRequest(job_id=job_id, node_id=node_id))

    # -- work stream -------------------------------------------------------------------------

    def work_items(self, node_id: str) -> Iterator[Assignment | Cancellation]:
        """Assignments and cancellations for ``node_id``, reconnecting (with backoff) whenever
        the stream breaks, until the agent stops.
        """
        backoff = 0.5
        while not self._stop.is_set():
            call = self._gateway.WorkStream(agent_pb2.WorkStreamRequest(node_id=node_id))
            with self._stream_lock:
                self._stream = call
            if self._stop.is_set():  # stop() may have run before the stream was recorded
                call.cancel()
            try:
                for item in call:
                    backoff = 0.5
                    parsed = convert.work_item_from_proto(item)
                    if parsed is not None:
                        yield parsed
                log.info("work stream ended by the scheduler; reconnecting")
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                log.info("work stream broke (%s); reconnecting in %.1fs", exc.code().name, backoff)
            finally:
                with self._stream_lock:
                    self._stream = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def cancel_stream(self) -> None:
        """Cancel the open work stream, if any (used when stopping)."""
        with self._stream_lock:
            if self._stream is not None:
                self._stream.cancel()


def call_with_retry(
    stop: threading.Event, what: str, fn: Callable[..., T], request: Any, max_backoff_s: float = 5.0
) -> T:
    """Call ``fn(request)`` with a deadline, retrying transient codes with backoff until
    ``stop`` (then one last try); other codes raise ``Rejected``."""
    backoff = 0.2
    while True:
        last_try = stop.is_set()
        try:
            return fn(request, timeout=DEFAULT_TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code()
            if code not in _RETRY:
                raise Rejected(code.name, str(exc.details())) from exc
            if last_try:
                raise Stopped(f"{what}: {code.name} while stopping") from exc
            log.info("%s: %s, retrying in %.1fs", what, code.name, backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, max_backoff_s)


NODE_TOKEN_FILE = "node-token"
JOIN_REQUEST_FILE = "join-request-id"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only, atomically (a crash leaves old or new)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def node_token(broker: str, node_id: str, join_token: str, state_dir: Path, stop: threading.Event) -> str:
    """This node's token: the one kept in ``state_dir``, or, on first boot, the one JoinNode
    trades the one-time ``join_token`` for (then kept, so restarts never need the join token).

    The join call's request_id is written down before the call: a reply lost to a crash
    or a network cut is fetched again with the same id, which the broker still honours.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved = state_dir / NODE_TOKEN_FILE
    if saved.exists():
        return saved.read_text().strip()
    request_file = state_dir / JOIN_REQUEST_FILE
    if request_file.exists():
        request_id = request_file.read_text().strip()
    else:
        request_id = new_id("join")
        _write_private(request_file, request_id)
    channel = open_channel(broker, join_token)
    try:
        stub = broker_pb2_grpc.ResourceBrokerStub(channel)
        request = broker_pb2.JoinNodeRequest(request_id=request_id, node_id=node_id)
        reply = call_with_retry(stop, "JoinNode", stub.JoinNode, request, max_backoff_s=10.0)
    finally:
        channel.close()
    _write_private(saved, reply.node_token)
    request_file.unlink(missing_ok=True)
    log.info("joined the control plane; node token kept", extra={"node_id": node_id})
    return str(reply.node_token)
