"""The steps of putting an agent on an SSH host (async, on the ``Sessions`` loop).

Each step is one or two round trips on an open asyncssh connection, and builds its
command lines with ``sh_join`` (or passes values as positional arguments of a fixed
script): ``install`` (upload the wheel set over SFTP, unpack it into a venv),
``write_secrets`` (the node token, the TLS CA: 0600 files written over SFTP, never on a
command line), ``start`` (the agent, detached), ``needs_tunnel`` and ``forward`` (the
reverse tunnels to a control plane the host cannot reach).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from styx.provider import ProviderError, ProviderErrorKind, clip
from styx_plugins.ssh import remote, wheels
from styx_plugins.ssh.pools import Host
from styx_plugins.ssh.remote import HostInfo, sh_join

_LOOPBACK = ("", "localhost", "0.0.0.0", "::1")


async def install(conn: Any, host: Host, base: str, wheel_dir: Path) -> None:
    """Make BASE (private), copy the wheels there and unpack them into BASE/venv."""
    # umask: every folder made here is private, ~/.styx-ssh included (the node's logs live there).
    mkdir = "umask 077 && " + sh_join(["mkdir", "-p", f"{base}/wheels", f"{base}/home"])
    await remote.run(conn, mkdir, host, "mkdir")
    async with conn.start_sftp_client() as sftp:
        await sftp.put([str(p) for p in wheels.wheels_in(wheel_dir)], f"{base}/wheels/")
    steps = [
        sh_join(["python3", "-m", "venv", "--without-pip", f"{base}/venv"]),
        sh_join([f"{base}/venv/bin/python", "-c", remote.EXTRACT_WHEELS, f"{base}/wheels"]),
        sh_join(["rm", "-rf", f"{base}/wheels"]),
    ]
    await remote.run(conn, " && ".join(steps), host, "installing the agent", timeout_s=300)


def agent_argv(
    base: str,
    host: Host,
    node_id: str,
    instance_id: str,
    endpoints: tuple[str, str],
    info: HostInfo,
    labels: Mapping[str, str],
) -> list[str]:
    """The agent's command line: its node, the endpoints it dials, the address its peers use."""
    argv = [
        f"{base}/venv/bin/python", "-m", "styx.agent",
        "--node-id", node_id,
        "--provider", "ssh",
        "--region", host.pool,
        "--instance-type", host.name,
        "--instance-id", instance_id,
        "--scheduler", endpoints[0],
        "--broker", endpoints[1],
        "--address", host.ip,
        "--work-dir", f"{base}/work",
        "--cpus", repr(info.cpus),
        "--memory-gib", repr(info.memory_gib),
    ]  # fmt: skip
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    return argv


async def write_secrets(conn: Any, base: str, token: str, ca_pem: str) -> list[str]:
    """Write BASE/token (and BASE/ca.pem) as 0600 files; the ``env`` prefix the agent needs."""
    import asyncssh

    private = asyncssh.SFTPAttrs(permissions=0o600)
    async with conn.start_sftp_client() as sftp:
        async with sftp.open(f"{base}/token", "w", private) as fh:
            await fh.write(token + "\n")
        if not ca_pem:
            return []
        async with sftp.open(f"{base}/ca.pem", "w", private) as fh:
            await fh.write(ca_pem)
    return ["env", f"STYX_TLS_CA={base}/ca.pem"]


async def start(conn: Any, host: Host, base: str, argv: list[str]) -> int:
    """Start ``argv`` detached with BASE/token as its stdin (the file is gone after); its pid."""
    out = await remote.run(conn, sh_join(["sh", "-c", remote.START_AGENT, "sh", base, *argv]), host, "start agent")
    try:
        return int(out.strip())
    except ValueError:
        raise ProviderError(
            ProviderErrorKind.INTERNAL, f"{host.where}: the agent did not start ({clip(out)})"
        ) from None


async def needs_tunnel(conn: Any, host: Host, base: str, endpoints: tuple[str, ...], mode: str) -> bool:
    """Whether the agent must dial through reverse tunnels: ``mode`` always / never, or auto:
    an endpoint on loopback, or one the host cannot open a TCP connection to."""
    if mode in ("always", "never"):
        return mode == "always"
    for endpoint in endpoints:
        address, _, port = endpoint.rpartition(":")
        address = address.strip("[]")
        if address in _LOOPBACK or address.startswith("127."):
            return True
        argv = [f"{base}/venv/bin/python", "-c", remote.REACH, address, port]
        if (await remote.run(conn, sh_join(argv), host, "reaching the control plane")).strip() != "yes":
            return True
    return False


async def forward(conn: Any, host: Host, targets: list[str], ports: list[int]) -> tuple[list[Any], list[int]]:
    """Reverse-forward the host's 127.0.0.1:PORT (0: any) to each host:port target; the
    listeners (closing one ends its tunnel) and the ports they listen on."""
    listeners: list[Any] = []
    out = []
    try:
        for target, port in zip(targets, ports, strict=True):
            address, _, dest = target.rpartition(":")
            dest_host = address.strip("[]") or "127.0.0.1"
            listener = await conn.forward_remote_port("127.0.0.1", port, dest_host, int(dest))
            listeners.append(listener)
            out.append(int(listener.get_port()))
    except Exception as exc:
        for listener in listeners:
            listener.close()
        raise ProviderError(
            ProviderErrorKind.INTERNAL, f"{host.where}: reverse tunnel refused ({clip(str(exc))})"
        ) from None
    return listeners, out
