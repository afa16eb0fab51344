"""The local control plane's life: start once, reuse, survive races, recover when stale, stop clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from helpers import SkyCli, free_port, pid_alive, run_sky, sky_command, sky_env, wait_until


def test_up_is_idempotent_and_reused(fresh_sky: SkyCli) -> None:
    fresh_sky.ok("local", "up")
    pids = fresh_sky.plane_pids()
    assert set(pids) == {"scheduler", "broker", "provisioner"}
    fresh_sky.ok("local", "up")
    fresh_sky.ok("status")
    assert fresh_sky.plane_pids() == pids
    token = fresh_sky.home / "local" / "token"
    assert oct(token.stat().st_mode & 0o777) == "0o600"
    data = json.loads(fresh_sky.ok("local", "status", "--json").stdout)
    assert data["running"] and {s["health"] for s in data["services"]} == {"SERVING"}


def test_concurrent_first_commands_start_one_plane(fresh_sky: SkyCli) -> None:
    procs = [
        subprocess.Popen([*sky_command(), "status"], env=sky_env(fresh_sky.home), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    pids = fresh_sky.plane_pids()
    schedulers = [
        pid for pid in fresh_sky.leftover_processes()
        if b"styx.scheduler" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert schedulers == [pids["scheduler"]]


def test_stale_plane_restarts_cleanly(fresh_sky: SkyCli) -> None:
    fresh_sky.ok("run", "--", "echo", "before")
    old = fresh_sky.plane_pids()
    os.kill(old["scheduler"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(old["scheduler"]), timeout=10)
    assert fresh_sky("local", "status").returncode == 3  # stale
    # The next command restarts the dead scheduler only; stored tasks survive (SQLite state).
    tasks = json.loads(fresh_sky.ok("status", "--json").stdout)
    assert any(t["run"] == "echo before" and t["state"] == "SUCCEEDED" for t in tasks)
    new = fresh_sky.plane_pids()
    assert new["scheduler"] != old["scheduler"]
    for svc in ("broker", "provisioner"):
        assert new[svc] == old[svc] and pid_alive(old[svc]), f"the live {svc} was restarted"
    assert fresh_sky.ok("run", "--", "echo", "after").stdout == "after\n"
    fresh_sky.down_and_check()


def test_up_after_a_crash_keeps_running_tasks(fresh_sky: SkyCli) -> None:
    """`sky local up` with one service dead (the documented way back after a crash) starts
    that service alone: the agent and its running task live on, and the task runs once."""
    starts = fresh_sky.home / "starts.txt"
    task_id = fresh_sky.ok("run", "--detach", "--", f"echo $STYX_TASK_ID >> {starts}; sleep 6").stdout.strip()
    wait_until(lambda: fresh_sky.task(task_id)["state"] == "RUNNING", timeout=60, message="the task to run")
    old = fresh_sky.plane_pids()
    os.kill(old["broker"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(old["broker"]), timeout=10)
    fresh_sky.ok("local", "up")
    new = fresh_sky.plane_pids()
    assert new["broker"] != old["broker"]
    assert (new["scheduler"], new["provisioner"]) == (old["scheduler"], old["provisioner"])
    wait_until(lambda: fresh_sky.task(task_id)["state"] == "SUCCEEDED", timeout=60, message="the task to end")
    task = fresh_sky.task(task_id)
    assert task["attempt"] == 1, task
    assert starts.read_text().split() == [task_id], "the task ran more than once"
    fresh_sky.down_and_check()


def test_down_without_plane(tmp_path) -> None:
    proc = run_sky(["local", "down"], tmp_path)
    assert proc.returncode == 0 and "no local control plane" in proc.stdout


def test_unreachable_remote_endpoint_exits_3(tmp_path) -> None:
    """STYX_ENDPOINT where nobody listens: one line naming it, exit 3, no local plane started."""
    endpoint = f"127.0.0.1:{free_port()}"
    proc = run_sky(["status"], tmp_path, STYX_ENDPOINT=endpoint, STYX_TOKEN="x", STYX_TIMEOUT="3")
    assert proc.returncode == 3
    assert proc.stderr == f"error: cannot reach the scheduler at {endpoint}: is it running? (sky local up)\n"
    assert not (tmp_path / "local" / "plane.json").exists()


def test_up_after_every_service_died_and_a_port_was_taken(fresh_sky: SkyCli) -> None:
    """All three dead and a recorded port taken by another program (after a reboot, say):
    nothing of the plane is left to keep, so it starts afresh on new ports."""
    import socket

    fresh_sky.ok("local", "up")
    old = fresh_sky.plane_pids()
    for pid in old.values():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in old.values()), timeout=10)
    broker = json.loads((fresh_sky.home / "local" / "plane.json").read_text())["broker"]

    def refused() -> bool:
        # A killed process shows as a zombie while its other threads still hold its file
        # table, listening socket included: wait for the socket itself to be gone.
        try:
            socket.create_connection(("127.0.0.1", int(broker.rsplit(":", 1)[1])), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_until(refused, timeout=10, message="the killed broker's listening socket to close")
    with socket.socket() as squatter:
        # The killed broker's connections may sit in TIME_WAIT on that port; a program
        # taking the port after a reboot would not meet them, so allow binding past them.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", int(broker.rsplit(":", 1)[1])))
        squatter.listen()
        fresh_sky.ok("local", "up")
        assert json.loads((fresh_sky.home / "local" / "plane.json").read_text())["broker"] != broker
        assert fresh_sky.ok("run", "--", "echo", "after").stdout == "after\n"
    fresh_sky.down_and_check()
