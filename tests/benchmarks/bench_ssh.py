"""Time from `sky launch` to the task's first output line on SSH hosts, beside floors.

Run (as root, with openssh-server): ``python tests/benchmarks/bench_ssh.py [--runs 3]``.
Prints figures; asserts nothing. It makes two namespaced sshd hosts (tests/sshd_hosts.py)
and a local control plane in a temporary STYX_HOME (one untimed warm-up launch on local),
and removes all of it at the end.

Cases, each measured from just before the ``sky`` process starts to ``first`` on its stdout:

- **ssh, node new**: ``sky launch -c NAME --infra ssh/bench -- 'echo first'`` on a new
  cluster, so a new node: connect, probe, upload the wheel set over SFTP, unpack it into a
  venv on the host, start the agent, its reverse tunnels, its join; then ``sky down NAME``.
  The wheel set is built before the first run (cached across runs, as for users).
- **ssh, node up**: ``sky exec NAME`` on a cluster whose SSH node runs already.
- floors in the same run: an ``ssh HOST true`` round trip (OpenSSH client, new connection),
  and the same new-node launch on the local provider (no SSH, no install).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from launch_timing import first_output  # noqa: E402

from helpers import sky_command  # noqa: E402
from sshd_hosts import SshdHosts  # noqa: E402

BIN = Path(sys.executable).parent


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    why = SshdHosts.usable()
    if why:
        raise SystemExit(f"cannot make sshd hosts here: {why}")
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp:
        root = Path(tmp)
        hosts = SshdHosts(root / "hosts", 2)
        (root / "hosts").mkdir()
        hosts.start()
        home = root / "home"
        home.mkdir()
        (home / "ssh_node_pools.yaml").write_text(hosts.pool_yaml("bench"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("STYX_")}
        env.update(STYX_HOME=str(home), NO_COLOR="1")
        try:
            from styx_plugins.ssh import wheels

            wheels.wheel_set(sys.version_info[:2], os.uname().machine)  # built once, as `sky ssh up` does
            results: dict[str, list[float]] = {
                "ssh HOST true (floor)": [],
                "local, node new (floor)": [],
                "ssh, node new": [],
                "ssh, node up": [],
            }
            for argv in (["launch", "-c", "warm", "--infra", "local", "--", "true"], ["down", "warm"]):
                subprocess.run([*sky_command(), *argv], env=env, check=True, capture_output=True)
            for i in range(args.runs):
                results["ssh HOST true (floor)"].append(_timed(hosts.ssh_argv(hosts.hosts[0], "true")))
                name = f"b-loc-{i}"
                argv = [*sky_command(), "launch", "-c", name, "--infra", "local", "--", "echo first"]
                results["local, node new (floor)"].append(first_output(argv, env))
                subprocess.run([*sky_command(), "down", name], env=env, check=True, capture_output=True)
                name = f"b-ssh-{i}"
                argv = [*sky_command(), "launch", "-c", name, "--infra", "ssh/bench", "--", "echo first"]
                results["ssh, node new"].append(first_output(argv, env))
                argv = [*sky_command(), "exec", name, "--", "echo first"]
                results["ssh, node up"].append(first_output(argv, env))
                subprocess.run([*sky_command(), "down", name], env=env, check=True, capture_output=True)
            print(f"sky launch -> first output line on SSH hosts, {args.runs} runs each (plane warm)")
            for what, values in results.items():
                shown = ", ".join(f"{v:.3f}" for v in values)
                print(f"  {what:<26} median {statistics.median(values):6.3f} s   ({shown})")
        finally:
            subprocess.run([*sky_command(), "local", "down"], env=env, capture_output=True)
            hosts.close()


if __name__ == "__main__":
    main()
