"""Named clusters from the command line: ``sky launch -c``, ``sky exec``, ``sky down``,
``sky autostop`` and the clusters part of ``sky status``.

A cluster lives in the broker; its tasks are ordinary jobs whose resources name it, so
``sky queue`` / ``sky logs`` / ``sky cancel`` work on them as on any job.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from styx_cli import output
from styx_cli.client import request_id
from styx_cli.errors import EXIT_OK, EXIT_USAGE, CliError

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
STATE_NAMES = {1: "INIT", 2: "UP", 3: "DOWN", 4: "FAILED", 5: "STOPPED", 6: "STARTING"}


def check_name(name: str, flag: str = "CLUSTER") -> str:
    """Cluster names are lower-case letters, digits and '-' (they become cloud tags)."""
    if not _NAME.match(name or ""):
        raise CliError(
            f"{flag}: {name!r} is not a cluster name; use 1-40 lower-case letters, digits or '-'", EXIT_USAGE
        )
    return name


def ensure_cluster(name: str, resources: Any, idle_minutes: int, down: bool, num_nodes: int = 1) -> Any:
    """sky launch -c: create the cluster of ``num_nodes`` nodes (or reuse a live one); returns
    the Cluster message."""
    from styx.v1 import broker_pb2
    from styx_cli import services

    request = broker_pb2.CreateClusterRequest(
        request_id=request_id(),
        name=name,
        resources=resources,
        num_nodes=max(1, num_nodes),
        idle_minutes=idle_minutes,
        autostop_down=down,
    )
    with services.broker() as client:
        cluster = client.call("CreateCluster", request)
    state = STATE_NAMES.get(cluster.state, "?")
    where = f" on {cluster.where}" if cluster.where else ""
    output.info(f"cluster {name}: {state}{where}" + (f" ({cluster.reason})" if cluster.reason else ""))
    return cluster


def require_cluster(name: str) -> Any:
    """sky exec: the cluster must exist and be live."""
    from styx.v1 import broker_pb2
    from styx_cli import services

    with services.broker() as client:
        cluster = client.call("GetCluster", broker_pb2.GetClusterRequest(name=name))
    state = STATE_NAMES.get(cluster.state, "?")
    if state in ("DOWN", "FAILED"):
        why = f": {cluster.reason}" if cluster.reason else ""
        raise CliError(f"cluster {name} is {state}{why}; `sky launch -c {name} ...` brings it back")
    if state == "STOPPED":
        raise CliError(f"cluster {name} is stopped; `sky start {name}` first")
    return cluster


def pin(tasks: list[Any], name: str) -> None:
    """Pin every task message (styx.v1.TaskSpec) to the cluster."""
    for task in tasks:
        task.resources.cluster = name
        for alt in (*task.resources.any_of, *task.resources.ordered):
            alt.cluster = name


_ACTIONS = {
    "down": ("DownCluster", "terminated"),
    "stop": ("StopCluster", "stopped"),
    "start": ("StartCluster", "starting"),
}


def cmd_cluster_action(args: argparse.Namespace) -> int:
    """sky down|stop|start NAME...: terminate, stop or start clusters' nodes."""
    from styx.v1 import broker_pb2
    from styx_cli import services

    method, done = _ACTIONS[args.action]
    names = [check_name(n) for n in args.clusters]
    with services.broker() as client:
        for name in names:
            request = getattr(broker_pb2, f"{method}Request")(request_id=request_id(), name=name)
            cluster = client.call(method, request)
            print(f"{name}: {STATE_NAMES.get(cluster.state, '?')} ({len(cluster.node_ids)} node(s) {done})")
    return EXIT_OK


def cmd_autostop(args: argparse.Namespace) -> int:
    """sky autostop NAME -i MINUTES [--down] | --cancel."""
    from styx.v1 import broker_pb2
    from styx_cli import services

    name = check_name(args.cluster)
    minutes = 0 if args.cancel else args.idle_minutes
    if minutes is None or minutes < 0:
        raise CliError("sky autostop: give -i MINUTES (at least 1), or --cancel", EXIT_USAGE)
    request = broker_pb2.SetAutostopRequest(request_id=request_id(), name=name, idle_minutes=minutes, down=args.down)
    with services.broker() as client:
        client.call("SetAutostop", request)
    if minutes:
        print(f"{name}: autostop ({'down' if args.down else 'stop'}) after {minutes} idle minutes")
    else:
        print(f"{name}: autostop cancelled")
    return EXIT_OK


def cluster_rows(clusters: list[Any]) -> list[dict[str, Any]]:
    """Cluster messages as plain rows for tables and --json."""
    rows = []
    for c in clusters:
        rows.append(
            {
                "name": c.name,
                "state": STATE_NAMES.get(c.state, "?"),
                "nodes": len(c.node_ids),
                "where": c.where,
                "hourly_price": round(c.hourly_price, 4),
                "autostop": (f"{c.idle_minutes}m" + (" (down)" if c.autostop_down else "")) if c.idle_minutes else "-",
                "reason": c.reason,
            }
        )
    return rows


def list_clusters() -> list[dict[str, Any]]:
    """Live clusters of the plane, for sky status (empty when the broker has none)."""
    from styx.v1 import broker_pb2
    from styx_cli import services

    with services.broker() as client:
        reply = client.call("ListClusters", broker_pb2.ListClustersRequest())
    return cluster_rows(list(reply.clusters))


def print_clusters(rows: list[dict[str, Any]]) -> None:
    """The clusters table of sky status (nothing when there are none)."""
    if not rows:
        return
    table_rows = [
        [r["name"], r["state"], str(r["nodes"]), r["where"] or "-", f"{r['hourly_price']:.2f}", r["autostop"],
         r["reason"][:60]]
        for r in rows
    ]  # fmt: skip
    output.print_state_table(
        ("NAME", "STATE", "NODES", "WHERE", "$/H", "AUTOSTOP", "REASON"), table_rows, 1, "Clusters"
    )
