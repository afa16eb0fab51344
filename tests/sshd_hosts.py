"""Real SSH hosts on this machine: Debian's OpenSSH ``sshd``, one per network namespace.

The recipe of ../shared/INFRA-TESTING.md section 1: every host is a network namespace on
one bridge of its own (switched, not routed: ``ip_forward`` stays off and no host has a
default route), with its own address, host key, ``sshd`` and home directory (``SetEnv
HOME``), and a stand-in ``nvidia-smi`` on its PATH (``SetEnv PATH``) that prints the GPUs it
was given, in ``nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits``
form. A blackhole route keeps the fixture's /24 on this machine, so an address of a host
that is not up fails at once instead of leaving through the default gateway.

Names and the subnet are derived from this process's pid, so several test sessions on one
machine do not collide. ``SshdHosts.usable()`` says why the hosts cannot be made (not root,
no ``sshd``, no ``ip``): the fixtures skip with that reason.

Only network, hostname and ``$HOME`` are per host; the filesystem, PIDs and CPUs are the
machine's. ``pids(i)`` lists what runs in host ``i``'s namespace besides its ``sshd``: how a
test proves that a teardown left nothing running there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

A100 = ("NVIDIA A100-SXM4-80GB", 81920)
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@dataclass(frozen=True)
class Host:
    """One namespaced sshd: its address, namespace, folder and home directory."""

    index: int
    ip: str
    netns: str
    dir: Path

    @property
    def home(self) -> Path:
        """The login's ``$HOME`` on this host (per host, unlike /root)."""
        return self.dir / "home"


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


class SshdHosts:
    """``count`` namespaced sshd hosts under ``root``; ``close()`` removes every trace."""

    def __init__(self, root: Path, count: int = 2, gpus: Sequence[Sequence[tuple[str, int]]] | None = None) -> None:
        self.root = root
        self.count = count
        self.gpus = list(gpus) if gpus is not None else [[A100, A100]] * count
        tag = f"{os.getpid() % 100000:05d}"
        self.bridge = f"sxb{tag}"
        # A /24 of 10.200.0.0/16 per session, chosen from the pid; .1 is the bridge.
        self.subnet = f"10.200.{os.getpid() % 250 + 2}"
        self._tag = tag
        self.key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.hosts: list[Host] = []
        self._sshd: dict[int, subprocess.Popen[bytes]] = {}

    @staticmethod
    def usable() -> str:
        """Empty when hosts can be made here, else why not."""
        if os.geteuid() != 0:
            return "namespaced sshd hosts need root"
        if not os.path.exists(SSHD):
            return f"no {SSHD} (apt-get install openssh-server)"
        if shutil.which("ip") is None:
            return "no `ip` command (apt-get install iproute2)"
        if shutil.which("ssh-keygen") is None:
            return "no ssh-keygen (apt-get install openssh-client)"
        return ""

    @property
    def cidr(self) -> str:
        """The fixture's subnet."""
        return f"{self.subnet}.0/24"

    def unused_ip(self) -> str:
        """An address of the subnet with no host: connecting to it fails at once (blackhole)."""
        return f"{self.subnet}.250"

    def start(self) -> SshdHosts:
        """Make the bridge, the namespaces and the sshds; wait until each one listens."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _sh("ip", "route", "replace", "blackhole", self.cidr)
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        # The bridge holds the lower half of the /24; the blackhole the rest (longer prefix wins).
        _sh("ip", "addr", "add", f"{self.subnet}.1/25", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        self.key.unlink(missing_ok=True)
        Path(f"{self.key}.pub").unlink(missing_ok=True)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        known = []
        for i in range(1, self.count + 1):
            host = Host(i, f"{self.subnet}.{10 + i}", f"sxh{self._tag}-{i}", self.root / f"h{i}")
            self._make_host(host, self.gpus[i - 1])
            known.append(f"{host.ip} {' '.join((host.dir / 'ssh_host_ed25519_key.pub').read_text().split()[:2])}")
            self.hosts.append(host)
        self.known_hosts.write_text("\n".join(known) + "\n")
        deadline = time.monotonic() + 20
        for host in self.hosts:
            while f"{host.ip}:22" not in _sh("ip", "netns", "exec", host.netns, "ss", "-ltn").stdout:
                proc = self._sshd[host.index]
                if proc.poll() is not None:
                    raise RuntimeError(f"sshd of {host.ip} exited: {(host.dir / 'sshd.log').read_text()[-500:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd of {host.ip} did not listen within 20 s")
                time.sleep(0.05)

    def _make_host(self, host: Host, gpus: Sequence[tuple[str, int]]) -> None:
        d = host.dir
        (d / "bin").mkdir(parents=True, exist_ok=True)
        host.home.mkdir(mode=0o700, exist_ok=True)
        veth = f"sxv{self._tag}{host.index}"
        _sh("ip", "netns", "add", host.netns)
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _sh("ip", "link", "set", veth, "master", self.bridge, "up")
        _sh("ip", "-n", host.netns, "addr", "add", f"{host.ip}/25", "dev", "eth0")
        _sh("ip", "-n", host.netns, "link", "set", "eth0", "up")
        _sh("ip", "-n", host.netns, "link", "set", "lo", "up")  # no default route, on purpose
        hostkey = d / "ssh_host_ed25519_key"
        hostkey.unlink(missing_ok=True)
        Path(f"{hostkey}.pub").unlink(missing_ok=True)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey))
        shutil.copy(f"{self.key}.pub", d / "authorized_keys")
        lines = "".join(f"{i}, {name}, {mib}\\n" for i, (name, mib) in enumerate(gpus))
        smi = d / "bin" / "nvidia-smi"
        smi.write_text(f'#!/bin/sh\nprintf "{lines}"\n' if gpus else "#!/bin/sh\necho 'no devices' >&2\nexit 9\n")
        smi.chmod(0o755)
        path = f"{d}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        (d / "sshd_config").write_text(
            f"Port 22\nListenAddress {host.ip}\nHostKey {hostkey}\nAuthorizedKeysFile {d}/authorized_keys\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"UsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\n"
            f"SetEnv PATH={path} HOME={host.home} STYX_TEST_HOST=h{host.index}\n"
            f"Subsystem sftp {SFTP_SERVER}\n"
        )
        self._sshd[host.index] = subprocess.Popen(
            [
                "ip", "netns", "exec", host.netns, "unshare", "--uts", "sh", "-c",
                f"hostname sx-h{host.index}; exec {SSHD} -D -f {d}/sshd_config -E {d}/sshd.log",
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def sshd_pid(self, host: Host) -> int:
        """The pid of the host's sshd (``ip netns exec`` and ``unshare`` both exec)."""
        return self._sshd[host.index].pid

    def pids(self, host: Host) -> list[int]:
        """Processes in the host's namespace other than its listening sshd."""
        out = _sh("ip", "netns", "pids", host.netns, check=False).stdout.split()
        return [int(p) for p in out if int(p) != self.sshd_pid(host)]

    def commands(self, host: Host) -> list[str]:
        """The command lines of ``pids(host)`` (for assertion messages)."""
        found = []
        for pid in self.pids(host):
            try:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
        return found

    def ssh_argv(self, host: Host, *command: str) -> list[str]:
        """An ``ssh`` command line that runs ``command`` on the host."""
        return [
            "ssh", "-i", str(self.key), "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
            f"root@{host.ip}", *command,
        ]  # fmt: skip

    def pool_yaml(self, name: str, hosts: Sequence[Host] | None = None, **extra: object) -> str:
        """A ``ssh_node_pools.yaml`` entry for ``hosts`` (default all) in SkyPilot's format."""
        import yaml

        pool: dict[str, object] = {
            "hosts": [h.ip for h in (self.hosts if hosts is None else hosts)],
            "user": "root",
            "identity_file": str(self.key),
            "known_hosts": str(self.known_hosts),
            **extra,
        }
        return str(yaml.safe_dump({name: pool}, sort_keys=False))

    def close(self) -> None:
        """Kill everything in the namespaces, delete them, the bridge and the route."""
        for host in self.hosts or [
            Host(i, "", f"sxh{self._tag}-{i}", self.root / f"h{i}") for i in range(1, self.count + 1)
        ]:
            pids = _sh("ip", "netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            proc = self._sshd.get(host.index)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            deadline = time.monotonic() + 10
            while _sh("ip", "netns", "pids", host.netns, check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.05)  # else the veth lingers a moment
            _sh("ip", "netns", "del", host.netns, check=False)
            veth = f"sxv{self._tag}{host.index}"
            while _sh("ip", "link", "show", veth, check=False).returncode == 0 and time.monotonic() < deadline:
                time.sleep(0.05)  # the namespace's end takes its veth pair a moment later
            _sh("ip", "link", "del", veth, check=False)
        _sh("ip", "link", "del", self.bridge, check=False)
        _sh("ip", "route", "del", "blackhole", self.cidr, check=False)


def sshd_hosts_fixture(tmp_path_factory: pytest.TempPathFactory, count: int = 2) -> Iterator[SshdHosts]:
    """Body of the module-scoped fixtures: ``count`` hosts, skipped cleanly where they cannot be made."""
    why = SshdHosts.usable()
    if why:
        pytest.skip(why)
    hosts = SshdHosts(tmp_path_factory.mktemp("sshd"), count).start()
    try:
        yield hosts
    finally:
        hosts.close()


@pytest.fixture(scope="module")
def sshd_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdHosts]:
    """Two namespaced sshd hosts (each with two stand-in A100s), shared by a test module."""
    yield from sshd_hosts_fixture(tmp_path_factory, 2)
