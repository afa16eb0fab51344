"""``sky status -v``: each task's provisioning attempts (broker) and recent events (scheduler).

Imported only with ``-v``, so plain ``sky status`` makes one call and loads none of this.
The ``*_to_dict`` / ``*_lines`` helpers are pure and unit-tested without sockets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any, TextIO

from styx_cli import output
from styx_cli.errors import CliError

# Events shown per task (the newest ones); a retried task can have dozens.
EVENTS_SHOWN = 10
# Provisioning attempts asked per task.
ATTEMPTS_LIMIT = 50
_OUTCOME_STYLES = {"PENDING": "yellow", "REGISTERED": "green", "FAILED": "red"}


def _seconds(message: Any, name: str) -> float | None:
    if not message.HasField(name):
        return None
    ts = getattr(message, name)
    return ts.seconds + ts.nanos / 1e9


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def attempt_to_dict(attempt: Any) -> dict[str, Any]:
    """A styx.v1.ProvisioningAttempt as plain data (``sky status -v --json``)."""
    from styx.v1 import broker_pb2, provisioner_pb2

    offer = attempt.offer
    kind = provisioner_pb2.ProviderErrorKind.Name(attempt.error_kind).removeprefix("PROVIDER_ERROR_KIND_")
    return {
        "node_id": attempt.node_id,
        "allocation_id": attempt.allocation_id,
        "provider": offer.provider,
        "region": offer.region,
        "zone": offer.zone,
        "instance_type": offer.instance_type,
        "spot": attempt.spot,
        "hourly_price": attempt.hourly_price,
        "outcome": broker_pb2.ProvisioningAttemptState.Name(attempt.state).removeprefix("PROVISIONING_ATTEMPT_STATE_"),
        "error_kind": "" if kind == "UNSPECIFIED" else kind,
        "error": attempt.error,
        "operation_id": attempt.operation_id,
        "started_at": _iso(_seconds(attempt, "started_at")),
        "updated_at": _iso(_seconds(attempt, "updated_at")),
    }


def event_to_dict(event: Any) -> dict[str, Any]:
    """A styx.v1.Event as plain data."""
    from styx.v1 import common_pb2

    return {
        "seq": event.seq,
        "time": _iso(_seconds(event, "time")),
        "type": common_pb2.EventType.Name(event.type).removeprefix("EVENT_TYPE_"),
        "state": output.state_name(event.state),
        "attempt": event.attempt,
        "node_id": event.node_id,
        "message": event.message,
    }


def attempt_line(a: dict[str, Any], stream: TextIO) -> str:
    """``aws/us-east-1/use1-az1 p4d.24xlarge $32.77/h spot  FAILED  CAPACITY: <error>  (node n-1)``."""
    place = "/".join(p for p in (a["provider"], a["region"], a["zone"]) if p)
    market = " spot" if a["spot"] else ""
    outcome = output.paint(f"{a['outcome']:<10}", _OUTCOME_STYLES.get(a["outcome"], ""), stream)
    parts = [f"{place} {a['instance_type']} ${a['hourly_price']:.2f}/h{market}", outcome]
    if a["error"] or a["error_kind"]:
        parts.append(f"{a['error_kind'] or 'ERROR'}: {output.one_line(a['error'], 100)}")
    if a["node_id"]:
        parts.append(f"(node {a['node_id']})")
    return "  ".join(parts)


def event_line(e: dict[str, Any]) -> str:
    """``2024-05-01T12:00:02Z  SCHEDULED  attempt 1  node n-1  <message>``."""
    parts = [e["time"] or "-", f"{e['type']:<9}"]
    if e["attempt"]:
        parts.append(f"attempt {e['attempt']}")
    if e["node_id"]:
        parts.append(f"node {e['node_id']}")
    if e["message"]:
        parts.append(output.one_line(e["message"], 100))
    return "  ".join(parts)


def detail_lines(task: dict[str, Any], stream: TextIO) -> list[str]:
    """The ``-v`` block of one task: its attempts (newest first), then its newest events."""
    lines = [f"{task['task_id']} ({task['name']}):"]
    attempts = task.get("provisioning_attempts")
    if attempts is None:
        lines.append(f"  provisioning attempts: unknown ({task.get('attempts_error') or 'broker not reachable'})")
    elif attempts:
        lines.append("  provisioning attempts (newest first):")
        lines += [f"    {attempt_line(a, stream)}" for a in attempts]
    else:
        lines.append("  provisioning attempts: none (placed on an existing node, or not placed yet)")
    events = task.get("events") or []
    if events:
        lines.append(
            f"  events (newest {min(len(events), EVENTS_SHOWN)}):" if len(events) >= EVENTS_SHOWN else "  events:"
        )
        lines += [f"    {event_line(e)}" for e in events[-EVENTS_SHOWN:]]
    return lines


def add_details(client: Any, tasks: Sequence[dict[str, Any]]) -> None:
    """Fill ``provisioning_attempts`` and ``events`` of each task dict (two calls per task).

    The broker may be unreachable (a remote plane without STYX_BROKER_ENDPOINT): the tasks
    then get ``provisioning_attempts: None`` and the reason, and the events still come.
    """
    from styx.v1 import broker_pb2, scheduler_pb2
    from styx_cli import services

    broker = None
    broker_error = ""
    try:
        broker = services.broker(client.target)
    except CliError as exc:
        broker_error = exc.message
    with contextlib.ExitStack() as stack:
        if broker is not None:
            stack.callback(broker.close)
        for task in tasks:
            if broker is not None:
                try:
                    reply = broker.call(
                        "ListProvisioningAttempts",
                        broker_pb2.ListProvisioningAttemptsRequest(task_id=task["task_id"], limit=ATTEMPTS_LIMIT),
                    )
                    task["provisioning_attempts"] = [attempt_to_dict(a) for a in reply.attempts]
                except CliError as exc:
                    task["provisioning_attempts"] = None
                    task["attempts_error"] = exc.message
            else:
                task["provisioning_attempts"] = None
                task["attempts_error"] = broker_error
            request = scheduler_pb2.WatchEventsRequest(task_id=task["task_id"], no_follow=True)
            events = [event_to_dict(e) for e in client.stream("WatchEvents", request, timeout=30.0)]
            task["events"] = events[-EVENTS_SHOWN:]


def print_details(tasks: Sequence[dict[str, Any]], stream: TextIO) -> None:
    """Print the ``-v`` blocks after the status table."""
    for task in tasks:
        print(file=stream)
        for line in detail_lines(task, stream):
            print(line, file=stream)
