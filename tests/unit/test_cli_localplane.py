"""styx.localplane's bookkeeping without starting services: records, token, staleness, lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from styx import localplane


def test_no_plane(tmp_path: Path) -> None:
    st = localplane.status(tmp_path)
    assert st.plane is None and not st.running and not st.stale
    assert localplane.stop(tmp_path) is False


def test_token_is_private_and_stable(tmp_path: Path) -> None:
    token = localplane.read_token(tmp_path)
    path = tmp_path / "local" / "token"
    assert len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert localplane.read_token(tmp_path) == token


def test_dead_pids_make_a_stale_plane(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "local").mkdir()
    record = {
        "scheduler": "127.0.0.1:1",
        "broker": "127.0.0.1:2",
        "provisioner": "127.0.0.1:3",
        "pids": {"scheduler": dead.pid, "broker": dead.pid, "provisioner": os.getpid()},
    }
    (tmp_path / "local" / "plane.json").write_text(json.dumps(record))
    st = localplane.status(tmp_path)
    assert st.stale and not st.running
    # Our own pid is alive but is not a styx.provisioner: a recycled pid must not count.
    assert [s.alive for s in st.services] == [False, False, False]
    assert "token=" not in repr(st.plane)  # the secret never reaches a log line
    # stop() of a stale plane kills nothing foreign and removes the record.
    assert localplane.stop(tmp_path) is True
    assert not (tmp_path / "local" / "plane.json").exists()


def test_corrupt_record_counts_as_no_plane(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "plane.json").write_text("{half")
    assert localplane.status(tmp_path).plane is None


def test_free_ports_are_distinct() -> None:
    ports = localplane._free_ports(3)
    assert len(set(ports)) == 3


def test_lock_serialises(tmp_path: Path) -> None:
    paths = localplane.Paths(tmp_path)
    order: list[str] = []

    def second() -> None:
        with localplane._locked(paths):
            order.append("second")

    with localplane._locked(paths):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]


def test_a_dead_service_whose_port_was_taken_is_not_restarted_elsewhere(tmp_path: Path) -> None:
    """Only the dead service is restarted, on its recorded port (agents dial it); when
    another program holds that port the error says how to restart the whole plane."""
    import socket

    import pytest

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # A live process that looks like the plane's scheduler and provisioner (their cmdline).
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "styx.scheduler styx.provisioner"])
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    try:
        port = squatter.getsockname()[1]
        (tmp_path / "local").mkdir()
        record = {
            "scheduler": "127.0.0.1:1",
            "broker": f"127.0.0.1:{port}",
            "provisioner": "127.0.0.1:3",
            "pids": {"scheduler": alive.pid, "broker": dead.pid, "provisioner": alive.pid},
            "ready": True,
        }
        (tmp_path / "local" / "plane.json").write_text(json.dumps(record))
        with pytest.raises(localplane.PlaneError, match=rf"the broker died and its port 127.0.0.1:{port} is now taken"):
            localplane.start(tmp_path, timeout=5)
        assert alive.poll() is None, "a live service of the plane was stopped"
    finally:
        squatter.close()
        alive.kill()
        alive.wait()
