"""Named clusters as a user types them: sky launch -c, sky exec, sky status, sky autostop, sky down.

A real local plane with its own STYX_HOME; the local provider may start two nodes here so a
cluster node and a shared-pool node can exist side by side.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_sky


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("clusters-home")
    try:
        yield home
    finally:
        run_sky(["local", "down"], home)


def sky(home: Path, *args: str):
    return run_sky(list(args), home, STYX_LOCAL_MAX_NODES="2")


def test_launch_exec_status_down(home: Path) -> None:
    first = sky(home, "launch", "-c", "dev", "--", "echo", "on-dev")
    assert first.returncode == 0, first.stderr
    assert "on-dev" in first.stdout and "cluster dev:" in first.stderr
    node = sky(home, "exec", "dev", "--", "echo $STYX_NODE_ID")
    assert node.returncode == 0, node.stderr
    pool = sky(home, "run", "--", "echo $STYX_NODE_ID")
    assert pool.returncode == 0, pool.stderr
    # The shared pool never runs on the cluster's node.
    assert pool.stdout.strip() != node.stdout.strip()
    again = sky(home, "exec", "dev", "--", "echo $STYX_NODE_ID")
    assert again.stdout.strip() == node.stdout.strip()  # same node: no provisioning
    auto = sky(home, "autostop", "dev", "-i", "30", "--down")
    assert auto.returncode == 0 and "after 30 idle minutes" in auto.stdout
    status = sky(home, "status")
    assert status.returncode == 0
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("dev "))
    assert "UP" in line and "30m (down)" in line
    stop = sky(home, "stop", "dev")
    assert stop.returncode == 1 and "cannot stop instances" in stop.stderr  # local nodes can only go down
    down = sky(home, "down", "dev")
    assert down.returncode == 0 and "dev: DOWN" in down.stdout
    late = sky(home, "exec", "dev", "--", "echo", "x")
    assert late.returncode == 1 and "cluster dev is DOWN" in late.stderr
    assert "Traceback" not in late.stderr


def test_cluster_errors_are_one_line(home: Path) -> None:
    missing = sky(home, "exec", "nope", "--", "echo", "x")
    assert missing.returncode == 1 and "cluster 'nope' not found" in missing.stderr
    bad = sky(home, "launch", "-c", "Bad_Name", "--", "echo", "x")
    assert bad.returncode == 2 and "--cluster: 'Bad_Name' is not a cluster name" in bad.stderr
    huge = sky(home, "launch", "-c", "huge", "--cpus", "4096", "--", "echo", "x")
    assert huge.returncode == 1 and "cpus=4096" in huge.stderr
    assert len(huge.stderr.strip().splitlines()) <= 3
