"""Multi-node tasks as a user types them: `sky launch` of a num_nodes: 2 task on a local plane
whose provider may start two nodes, `sky logs TASK --rank 1`, and a failing rank."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import processes_with_env, run_sky, wait_until

GANG = """\
name: pair
num_nodes: 2
run: |
  echo "rank $STYX_NODE_RANK/$STYX_NUM_NODES $STYX_NODE_ID sky=$SKYPILOT_NODE_RANK"
  echo "ips=$(echo "$STYX_NODE_IPS" | paste -sd, -)"
"""

FAILING = """\
name: broken
num_nodes: 2
run: |
  if [ "$STYX_NODE_RANK" = 1 ]; then echo "rank 1 gives up"; exit 3; fi
  echo "rank 0 waits"; GANG_MARK=gang-e2e sleep 120
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("gang-home")
    try:
        yield home
    finally:
        run_sky(["local", "down"], home)


def sky(home: Path, *args: str):
    return run_sky(list(args), home, timeout=180.0, STYX_LOCAL_MAX_NODES="2")


def task_of(home: Path, stderr: str) -> dict:
    match = re.search(r"\bj-[0-9a-f]+\b", stderr)
    assert match, stderr
    queue = sky(home, "queue", match.group(0), "--json")
    assert queue.returncode == 0, queue.stderr
    (task,) = json.loads(queue.stdout)["tasks"]
    return task


def test_two_ranks_run_on_two_nodes(home: Path) -> None:
    path = home / "pair.yaml"
    path.write_text(textwrap.dedent(GANG))
    launched = sky(home, "launch", str(path))
    assert launched.returncode == 0, launched.stderr
    rank0 = re.search(r"rank 0/2 (\S+) sky=0", launched.stdout)
    assert rank0, launched.stdout  # sky launch streams rank 0
    task = task_of(home, launched.stderr)
    assert task["state"] == "SUCCEEDED" and task["num_nodes"] == 2
    assert [r["state"] for r in task["ranks"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert task["ranks"][0]["node_id"] == rank0.group(1)
    logs = sky(home, "logs", task["task_id"], "--rank", "1")
    assert logs.returncode == 0, logs.stderr
    rank1 = re.search(r"rank 1/2 (\S+) sky=1", logs.stdout)
    assert rank1 and rank1.group(1) == task["ranks"][1]["node_id"]
    assert rank1.group(1) != rank0.group(1)  # two distinct nodes
    ips = [r["address"] for r in task["ranks"]]
    assert all(ips) and f"ips={','.join(ips)}" in logs.stdout and f"ips={','.join(ips)}" in launched.stdout


def test_a_failing_rank_fails_the_task_and_stops_the_other(home: Path) -> None:
    path = home / "broken.yaml"
    path.write_text(textwrap.dedent(FAILING))
    launched = sky(home, "launch", str(path))
    assert launched.returncode != 0
    task = task_of(home, launched.stderr)
    assert task["state"] == "FAILED" and "rank 1" in task["failure_reason"], task
    assert task["exit_code"] == 3
    assert wait_until(lambda: not processes_with_env("GANG_MARK", "gang-e2e"), timeout=20)
    final = wait_until(lambda: _ranks_over(home, task["task_id"]), timeout=20)
    assert final
    logs = sky(home, "logs", task["task_id"], "--rank", "1")
    assert "rank 1 gives up" in logs.stdout


def _ranks_over(home: Path, task_id: str) -> bool:
    status = sky(home, "status", task_id, "--json")
    if status.returncode != 0:
        return False
    data = json.loads(status.stdout)
    tasks = data if isinstance(data, list) else data.get("tasks", [])
    (task,) = [t for t in tasks if t["task_id"] == task_id]
    return [r["state"] for r in task["ranks"]] == ["CANCELLED", "FAILED"]
