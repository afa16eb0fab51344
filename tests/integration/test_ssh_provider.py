"""The SSH provider in-process against two real namespaced sshds (tests/sshd_hosts.py).

Covered: a retried create finds the running agent (one agent, same instance id); after a
provisioner "restart" (its connections dropped) a new provider re-opens the node's reverse
tunnels on the same ports, so the agent's endpoints work again; a host whose python3 is too
old is refused by name with nothing left behind; host keys: unknown is refused unless the
pool accepts new keys, which then records the key.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import wait_until
from sshd_hosts import SshdHosts, sshd_pair
from styx.provider import AgentLaunch, ProviderError, ProviderErrorKind

pytest.importorskip("asyncssh", reason="pip install 'styx[ssh]'")

__all__ = ["sshd_pair"]  # the fixture, imported for pytest

from styx_plugins.ssh.provider import SshProvider


@pytest.fixture
def env(tmp_path: Path, sshd_pair: SshdHosts) -> dict[str, str]:
    (tmp_path / "pools.yaml").write_text(sshd_pair.pool_yaml("p"))
    return {"STYX_SSH_NODE_POOLS": str(tmp_path / "pools.yaml"), "STYX_HOME": str(tmp_path / "home")}


@pytest.fixture
def greeter() -> Iterator[int]:
    """A TCP server on this namespace's loopback (where hosts cannot reach) saying "hi"."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hi")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        done.set()
        thread.join(5)
        server.close()


def create(provider: SshProvider, node_id: str, host_index: int, port: int = 1) -> str:
    offer = next(o for o in provider.offers() if o.instance_type.endswith(f".{10 + host_index}"))
    return provider.create(
        node_id=node_id,
        offer=offer,
        spot=False,
        labels={"styx-plane": "test"},
        request_id=f"req-{node_id}",
        agent_launch=AgentLaunch(f"127.0.0.1:{port}", f"127.0.0.1:{port}", "secret-token"),
    )


def host_reads(hosts: SshdHosts, index: int, port: int) -> str:
    """What the host reads from its own 127.0.0.1:PORT (a reverse tunnel's far end), or ""."""
    code = (
        "import socket, sys\ntry:\n    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)\n"
        "    print(s.recv(8).decode())\nexcept OSError:\n    pass\n"
    )
    argv = hosts.ssh_argv(hosts.hosts[index - 1], "python3", "-c", shlex.quote(code), str(port))
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()


def test_retried_create_and_tunnels_after_a_restart(env: dict[str, str], sshd_pair: SshdHosts, greeter: int) -> None:
    first = SshProvider(env=env)
    second: SshProvider | None = None
    try:
        instance = create(first, "node-one", 1, greeter)
        assert create(first, "node-one", 1, greeter) == instance  # retried: found, not made again
        agents = [c for c in sshd_pair.commands(sshd_pair.hosts[0]) if "styx.agent" in c]
        assert len(agents) == 1, agents
        (record,) = first._records.all()
        port = record["tunnels"]["ports"][0]
        assert "secret-token" not in str(record) and host_reads(sshd_pair, 1, port) == "hi"
        first.close()  # the provisioner dies: its connection and the tunnels on it go
        wait_until(lambda: host_reads(sshd_pair, 1, port) == "", timeout=10, message="the tunnel to close")
        second = SshProvider(env=env)
        wait_until(
            lambda: second.list_instances() and host_reads(sshd_pair, 1, port) == "hi",  # type: ignore[union-attr]
            timeout=20,
            message="the new provider to re-open the tunnel on its old port",
        )
        second.terminate(instance)
        assert not second.list_instances()
        wait_until(lambda: not sshd_pair.commands(sshd_pair.hosts[0]), timeout=20, message="nothing left on host 1")
        assert not (sshd_pair.hosts[0].home / ".styx-ssh").exists()
    finally:
        first.close()
        if second is not None:
            second.close()


def test_probes_during_a_create_do_not_close_its_connection(env: dict[str, str], sshd_pair: SshdHosts) -> None:
    """The broker reads offers (fresh probes, on the same connection) while a node installs:
    a probe ending must not close the connection the install is using."""
    provider = SshProvider(env=env)
    try:
        (pool,) = provider.pools().values()
        result: list[object] = []
        worker = threading.Thread(target=lambda: result.append(_try(lambda: create(provider, "node-busy", 1))))
        worker.start()
        probes = 0
        while worker.is_alive() or probes < 3:
            found = provider.probe_hosts(list(pool.hosts), fresh=True)
            assert all(not isinstance(f, ProviderError) for f in found.values()), found
            probes += 1
        worker.join()
        assert isinstance(result[0], str), result
        provider.terminate(str(result[0]))
        wait_until(lambda: not sshd_pair.commands(sshd_pair.hosts[0]), timeout=20, message="nothing left on host 1")
    finally:
        provider.close()


def _try(fn: Callable[[], str]) -> object:
    try:
        return fn()
    except ProviderError as exc:
        return exc


def test_python_too_old_is_refused_by_name_leaving_nothing(env: dict[str, str], sshd_pair: SshdHosts) -> None:
    host = sshd_pair.hosts[1]
    fake = host.dir / "bin" / "python3"  # first on the host's PATH: a Python 3.9 for the probe
    fake.write_text("#!/bin/sh\necho 3 9 x86_64\n")
    fake.chmod(0o755)
    provider = SshProvider(env=env)
    try:
        with pytest.raises(ProviderError) as err:
            create(provider, "node-old", 2)
        assert err.value.kind is ProviderErrorKind.INVALID
        assert f"ssh/p root@{host.ip}: python3 is 3.9; the Styx agent needs Python >= 3.11" in err.value.message
        assert not provider._records.all() and not (host.home / ".styx-ssh").exists()
    finally:
        fake.unlink()
        provider.close()


def test_unknown_host_key_refused_unless_the_pool_accepts_new(tmp_path: Path, sshd_pair: SshdHosts) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    host = sshd_pair.hosts[0]
    for accept in (False, True):
        (tmp_path / "pools.yaml").write_text(
            sshd_pair.pool_yaml("p", [host], known_hosts=str(known), accept_new_host_keys=accept)
        )
        provider = SshProvider(env={"STYX_SSH_NODE_POOLS": str(tmp_path / "pools.yaml"), "STYX_HOME": str(tmp_path)})
        try:
            (pool,) = provider.pools().values()
            found = provider.probe_hosts(list(pool.hosts))[host.ip]
        finally:
            provider.close()
        if not accept:
            assert isinstance(found, ProviderError) and found.kind is ProviderErrorKind.AUTH
            assert "host key unknown" in found.message and "accept_new_host_keys: true" in found.message
            assert known.read_text() == ""
        else:
            assert not isinstance(found, ProviderError), found
            real = " ".join((host.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])
            assert known.read_text() == f"{host.ip} {real}\n"
