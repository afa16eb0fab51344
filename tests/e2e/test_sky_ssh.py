"""The SSH provider as a user meets it: `sky` against a local plane whose provisioner reaches
two real OpenSSH servers, each in its own network namespace (tests/sshd_hosts.py).

Nothing is mocked: asyncssh logs in with a key, checks host keys against a known_hosts
file, probes the hosts (a stand-in ``nvidia-smi`` on their PATH reports two A100s each),
copies the agent's wheels over SFTP, and starts real agents there. The plane listens on
127.0.0.1 of this namespace, which the hosts cannot reach, so the agents dial back through
SSH reverse tunnels, and advertise their own namespace address to their peers.

Covered: a 2-node gang where rank 1 opens a TCP connection to rank 0 at the first address
of SKYPILOT_NODE_IPS, and `sky down` leaving no process and no file on either host; `sky
show-gpus --infra ssh/POOL` and `sky check ssh`; `sky ssh up` / `sky ssh down`; bad input
(unknown pool, unreachable host, wrong key, host key mismatch, a typo in the pool file, a
GPU the pool lacks), each a short error with nothing left on the hosts.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import free_port, run_sky, wait_until
from sshd_hosts import SshdHosts, sshd_pair

pytest.importorskip("asyncssh", reason="pip install 'styx[ssh]'")

__all__ = ["sshd_pair"]  # the fixture, imported for pytest


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, sshd_pair: SshdHosts) -> Iterator[Path]:
    """The plane's home, with a pool file: `pair` (both hosts) and the bad pools."""
    home = tmp_path_factory.mktemp("ssh-home")
    (home / "ssh_node_pools.yaml").write_text(pools_yaml(sshd_pair, home))
    try:
        yield home
    finally:
        run_sky(["local", "down"], home, **ssh_env())


def pools_yaml(hosts: SshdHosts, home: Path) -> str:
    """`pair`: both hosts; `dead`: an address nobody answers; `badkey`: a key the hosts refuse;
    `mitm`: a known_hosts file holding another key for host 1."""
    other = home / "other_id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong_known = home / "wrong_known_hosts"
    ip1 = hosts.hosts[0].ip
    wrong_known.write_text(f"{ip1} {' '.join(Path(f'{other}.pub').read_text().split()[:2])}\n")
    return "".join(
        [
            hosts.pool_yaml("pair"),
            f"dead:\n  hosts: [{hosts.unused_ip()}]\n  user: root\n  identity_file: {hosts.key}\n"
            f"  known_hosts: {hosts.known_hosts}\n",
            hosts.pool_yaml("badkey", hosts.hosts[:1], identity_file=str(other)),
            hosts.pool_yaml("mitm", hosts.hosts[:1], known_hosts=str(wrong_known)),
        ]
    )


def ssh_env(**extra: str) -> dict[str, str]:
    return {
        "STYX_SSH_CONNECT_TIMEOUT_SECONDS": "3",
        "STYX_PROVISIONER_RECONCILE_SECONDS": "0.5",
        **extra,
    }


def sky(home: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return run_sky(list(args), home, timeout=timeout, **ssh_env())


def logs(home: Path) -> str:
    """The plane's provisioner and broker logs (for assertion messages)."""
    return "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(home.rglob("*.log")) if p.is_file())


def styx_left(hosts: SshdHosts) -> dict[str, object]:
    """What Styx left on each host: processes besides sshd, and ~/.styx-ssh."""
    left: dict[str, object] = {}
    for host in hosts.hosts:
        procs = hosts.commands(host)
        files = (host.home / ".styx-ssh").exists()
        if procs or files:
            left[host.ip] = {"processes": procs, "styx-ssh": files}
    return left


# First, on the fresh plane: its broker has not read the provisioner's offers yet.
def test_show_gpus_and_check_list_the_pool(home: Path, sshd_pair: SshdHosts) -> None:
    shown = sky(home, "show-gpus", "--infra", "ssh/pair")
    assert shown.returncode == 0, shown.stderr
    row = next((line for line in shown.stdout.splitlines() if line.startswith("A100")), "")
    assert "ssh" in row and "2" in row, shown.stdout + shown.stderr + logs(home)
    checked = sky(home, "check", "ssh")
    assert checked.returncode == 0, checked.stderr
    assert "enabled" in checked.stdout and "pair: 2/2 hosts up, A100 x4" in checked.stdout, checked.stdout
    assert re.search(r"dead: 0/1 hosts up; ssh/dead root@\S+: cannot connect", checked.stdout), checked.stdout


def test_gang_of_two_rank1_reaches_rank0_and_down_leaves_nothing(home: Path, sshd_pair: SshdHosts) -> None:
    port = free_port()
    script = textwrap.dedent(f"""\
        import os, socket, time
        first = os.environ["SKYPILOT_NODE_IPS"].splitlines()[0]
        assert os.environ["STYX_NODE_IPS"] == os.environ["SKYPILOT_NODE_IPS"]
        assert os.environ["SKYPILOT_NUM_NODES"] == os.environ["STYX_NUM_NODES"] == "2"
        rank = os.environ["SKYPILOT_NODE_RANK"]
        assert rank == os.environ["STYX_NODE_RANK"]
        host = os.environ.get("STYX_TEST_HOST")
        if rank == "0":
            server = socket.create_server((first, {port}))
            conn, peer = server.accept()
            print("rank0 on", host, "got", conn.recv(64).decode(), "from", peer[0], flush=True)
        else:
            for _ in range(300):
                try:
                    conn = socket.create_connection((first, {port}), timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            conn.sendall(b"hello-from-rank1")
            print("rank1 on", host, "reached", first, flush=True)
        """)
    (home / "rank.py").write_text(script)
    task = home / "pair.yaml"
    task.write_text(f"name: pair\nrun: python3 {home / 'rank.py'}\n")
    launched = sky(home, "launch", "-c", "gang", str(task), "--infra", "ssh/pair", "--num-nodes", "2", timeout=240)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    ip1, ip2 = (h.ip for h in sshd_pair.hosts)
    got = re.search(r"rank0 on (h\d) got hello-from-rank1 from (\S+)", launched.stdout)
    assert got, launched.stdout
    # Rank 0 and rank 1 ran on different hosts; rank 1 dialled from its own namespace address.
    rank0_ip = {"h1": ip1, "h2": ip2}[got.group(1)]
    assert got.group(2) == ({ip1, ip2} - {rank0_ip}).pop(), launched.stdout
    task_id = re.search(r"\bt-[0-9a-f]+\b", launched.stdout + launched.stderr)
    assert task_id, launched.stderr
    rank1 = sky(home, "logs", task_id.group(0), "--rank", "1")
    assert rank1.returncode == 0, rank1.stderr
    assert f"reached {rank0_ip}" in rank1.stdout and got.group(1) not in rank1.stdout, rank1.stdout
    # Both hosts carry an agent now, and the token is nowhere on disk.
    for host in sshd_pair.hosts:
        assert any("styx.agent" in c for c in sshd_pair.commands(host)), sshd_pair.commands(host)
        (node_dir,) = (host.home / ".styx-ssh").iterdir()
        assert not (node_dir / "token").exists()
        assert oct(node_dir.stat().st_mode & 0o777) == "0o700"
    down = sky(home, "down", "gang")
    assert down.returncode == 0, down.stderr
    wait_until(lambda: not styx_left(sshd_pair), timeout=30, message="no Styx process or file left on the hosts")


def test_ssh_up_and_down(home: Path, sshd_pair: SshdHosts) -> None:
    up = sky(home, "ssh", "up", "pair")
    assert up.returncode == 0, up.stderr
    for host in sshd_pair.hosts:
        assert re.search(rf"{re.escape(host.ip)}\s+2\s+[\d.]+ GiB\s+A100:2\s+ready", up.stdout), up.stdout
    # A leftover of a plane that is gone: an agent folder no record owns.
    stray = sshd_pair.hosts[1].home / ".styx-ssh" / "node-stray"
    stray.mkdir(parents=True)
    down = sky(home, "ssh", "down", "pair")
    assert down.returncode == 0, down.stderr
    assert "removed 1 leftover node folder" in down.stderr, down.stderr
    assert not styx_left(sshd_pair)
    bad = sky(home, "ssh", "up", "dead")
    assert bad.returncode == 1 and "cannot connect" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("infra", "wanted"),
    [
        ("ssh/nope", r"ssh/nope; ssh: no region 'nope' \(it has: pair, dead, badkey, mitm\)"),
        ("ssh/dead", r"ssh/dead; ssh: dead: 0/1 hosts up; ssh/dead root@\S+: cannot connect"),
        ("ssh/badkey", r"ssh/badkey; ssh: badkey: 0/1 hosts up; .*login refused with key .*check `user`"),
        ("ssh/mitm", r"ssh/mitm; ssh: mitm: 0/1 hosts up; .*host key does not match .*ssh-keygen -R"),
    ],
)
def test_bad_pools_fail_short_and_leave_nothing(home: Path, sshd_pair: SshdHosts, infra: str, wanted: str) -> None:
    launched = sky(home, "launch", "--infra", infra, "--", "true", timeout=90)
    assert launched.returncode != 0, launched.stdout
    assert re.search(wanted, launched.stderr) and "Traceback" not in launched.stderr, launched.stderr
    # The reason is one line (besides the job's submitted/summary lines).
    assert len([ln for ln in launched.stderr.splitlines() if infra in ln]) == 1, launched.stderr
    assert not styx_left(sshd_pair)


def test_check_names_the_bad_host_keys_and_logins(home: Path, sshd_pair: SshdHosts) -> None:
    checked = sky(home, "check", "ssh")
    assert "ssh/badkey root@" in checked.stdout and "login refused" in checked.stdout, checked.stdout
    assert "ssh/mitm root@" in checked.stdout and "host key does not match" in checked.stdout, checked.stdout


def test_gpu_the_pool_lacks(home: Path, sshd_pair: SshdHosts) -> None:
    launched = sky(home, "launch", "--infra", "ssh/pair", "--gpus", "H100:1", "--", "true")
    assert launched.returncode != 0 and "H100" in launched.stderr and "Traceback" not in launched.stderr
    assert not styx_left(sshd_pair)


def test_pool_file_typo_is_one_line(tmp_path: Path, sshd_pair: SshdHosts) -> None:
    home = tmp_path / "typo-home"
    home.mkdir()
    (home / "ssh_node_pools.yaml").write_text(sshd_pair.pool_yaml("pair").replace("identity_file", "identiy_file"))
    try:
        checked = run_sky(["check", "ssh"], home, **ssh_env())
        assert "unknown key 'identiy_file'" in checked.stdout and "did you mean 'identity_file'" in checked.stdout
        up = run_sky(["ssh", "up", "pair"], home, **ssh_env())
        assert up.returncode == 2 and len(up.stderr.strip().splitlines()) <= 2, up.stderr
        assert "unknown key 'identiy_file'" in up.stderr, up.stderr
    finally:
        run_sky(["local", "down"], home)
    assert not styx_left(sshd_pair)
