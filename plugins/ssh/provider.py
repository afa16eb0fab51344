"""The SSH provider: machines a team already has, reached over SSH (asyncssh), as Styx nodes.

Pools come from ``ssh_node_pools.yaml`` (``pools.py``); each pool is a region
(``infra: ssh/POOL``) and each host is offered once (``max_instances=1``) with its real
capacity, probed over SSH (``remote.probe``: CPUs, memory, ``nvidia-smi``), at price 0.
The broker bin-packs tasks onto the node; a gang of N takes N hosts.

``create`` installs and starts an agent under ``~/.styx-ssh/<node>`` on the host:

1. connect (host key checked, ``session.py``) and probe; no python3 >= 3.11 is an error
   naming the host;
2. upload the wheel set (``wheels.py``: Styx from this checkout and its dependencies, so
   the host needs no network) over SFTP and unpack it into a venv there;
3. write the node's token into a 0600 file over SFTP (never on a command line), start
   the agent detached (``setsid nohup``), the token file as its stdin and removed at once;
4. the agent dials back. When the host cannot reach the control plane's endpoints (a
   plane on loopback, or a probe from the host fails) they are reached through SSH
   reverse tunnels (``forward_remote_port``) on the host's 127.0.0.1, held by this
   provider's connection; the agent advertises the host's pool address for its peers.

A failed create removes what it made. Instance ids are ``POOL/HOST/NODE``; a record per
node under ``$STYX_HOME/ssh/instances`` lets ``list_instances`` (the reconciler) see
them after a restart, and re-open their tunnels. ``terminate`` stops the agent and its
tasks and deletes ``~/.styx-ssh/<node>`` (and ``~/.styx-ssh`` when empty): the host is
left as found.

Environment: ``STYX_SSH_NODE_POOLS`` (the pool file), ``STYX_SSH_CONNECT_TIMEOUT_SECONDS``
(default 5), ``STYX_SSH_PROBE_TTL_SECONDS`` (default 60: how long a host's probe is
reused), ``STYX_SSH_TUNNEL`` (``auto`` | ``always`` | ``never``), ``STYX_SSH_WHEEL`` and
``STYX_SSH_WHEEL_CACHE`` (see ``wheels.py``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from styx.common.clock import Clock
from styx.provider import (
    CachedCheck,
    Capabilities,
    ConfigError,
    CreateRequest,
    InstanceStatus,
    Offer,
    ProviderBase,
    ProviderConfig,
    ProviderError,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
    clip,
    hookimpl,
)
from styx_plugins.ssh import install, records, remote, wheels
from styx_plugins.ssh.pools import Host, Pool, PoolError, load_pools, pools_path
from styx_plugins.ssh.remote import HostInfo, sh_join
from styx_plugins.ssh.session import INSTALL_HINT, Sessions

log = logging.getLogger(__name__)

NAME = "ssh"
ROOT_DIR = ".styx-ssh"
# Seconds the agent gets to stop its tasks after SIGTERM before its group is killed.
STOP_GRACE_S = 10


class SshProvider(ProviderBase):
    """Styx nodes on the hosts of SSH node pools. Thread-safe."""

    name = NAME
    capabilities = Capabilities(multi_node=True)

    def __init__(self, env: Mapping[str, str] | None = None, home: Path | None = None, clock: Clock | None = None):
        super().__init__(clock)
        self._env = env
        config = ProviderConfig.load("STYX_SSH_", env)
        self._connect_timeout = config.number("STYX_SSH_CONNECT_TIMEOUT_SECONDS", 5.0, positive=True)
        self._probe_ttl = config.number("STYX_SSH_PROBE_TTL_SECONDS", 60.0)
        self._tunnel_mode = config.get("STYX_SSH_TUNNEL", "auto").lower()
        env_home = (env or os.environ).get("STYX_HOME", "")
        self._records = records.Records((home or Path(env_home or Path.home() / ".styx")).expanduser() / "ssh")
        self.sessions = Sessions(self._connect_timeout)
        self._lock = threading.Lock()
        self._probed: dict[tuple[str, str], tuple[float, HostInfo | ProviderError]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[HostInfo | ProviderError]] = {}  # on the loop
        # node id -> (host, remote listeners) of the reverse tunnels this process holds.
        self._tunnels: dict[str, tuple[Host, list[Any]]] = {}
        self._check = CachedCheck(self._probe_all, ok_ttl_s=15.0, fail_ttl_s=5.0, clock=self.clock)

    # -- pools -------------------------------------------------------------------------

    @property
    def pools_file(self) -> Path:
        """The ssh_node_pools.yaml this provider reads."""
        return pools_path(self._env)

    def pools(self) -> dict[str, Pool]:
        """The pools of the file (re-read on every call: editing it needs no restart)."""
        return load_pools(self.pools_file)

    def pool(self, name: str) -> Pool:
        """One pool; ProviderError (INVALID) naming the known pools when there is none such."""
        try:
            pools = self.pools()
        except PoolError as exc:
            raise ProviderError(ProviderErrorKind.INVALID, str(exc)) from None
        if name not in pools:
            known = ", ".join(sorted(pools)) or f"none; define it in {self.pools_file}"
            raise ProviderError(ProviderErrorKind.INVALID, f"ssh/{name}: no such SSH node pool (pools: {known})")
        return pools[name]

    # -- probing -------------------------------------------------------------------------

    def host_info(self, host: Host, fresh: bool = False) -> HostInfo:
        """The host's probe (cached for STYX_SSH_PROBE_TTL_SECONDS); raises its ProviderError."""
        found = self.probe_hosts([host], fresh)[host.name]
        if isinstance(found, ProviderError):
            raise found
        return found

    def probe_hosts(self, hosts: list[Host], fresh: bool = False) -> dict[str, HostInfo | ProviderError]:
        """Probe hosts in parallel: host name -> its HostInfo or why it could not be probed."""
        now = self.clock.monotonic()
        out: dict[str, HostInfo | ProviderError] = {}
        todo = []
        with self._lock:
            for host in hosts:
                cached = self._probed.get((host.pool, host.name))
                ttl = self._probe_ttl if cached and isinstance(cached[1], HostInfo) else min(self._probe_ttl, 5.0)
                if cached and not fresh and now - cached[0] < ttl:
                    out[host.name] = cached[1]
                else:
                    todo.append(host)
        if todo:

            async def probe(host: Host) -> HostInfo | ProviderError:
                try:
                    async with self.sessions.use(host) as conn:
                        return await remote.probe(conn, host)
                except ProviderError as exc:
                    return exc

            async def one(host: Host) -> HostInfo | ProviderError:
                # check() and offers() run at once at startup: one probe per host, not two.
                key = (host.pool, host.name)
                task = self._inflight.get(key)
                if task is None:
                    task = self._inflight[key] = asyncio.ensure_future(probe(host))
                    try:
                        return await asyncio.shield(task)
                    finally:
                        self._inflight.pop(key, None)
                return await asyncio.shield(task)

            async def every() -> list[HostInfo | ProviderError]:
                return list(await asyncio.gather(*(one(h) for h in todo)))

            results = self.sessions.run(every(), timeout_s=self._connect_timeout * 3 + 30)
            with self._lock:
                for host, result in zip(todo, results, strict=True):
                    self._probed[(host.pool, host.name)] = (now, result)
                    out[host.name] = result
        return out

    def _hold(self, node_id: str, host: Host, listeners: list[Any]) -> None:
        """Keep a node's tunnels (and so the host's connection) open (on the loop)."""
        self._drop(node_id)
        self._tunnels[node_id] = (host, listeners)
        self.sessions.pin(host)

    def _drop(self, node_id: str) -> None:
        """Close a node's tunnels, if this process holds any (on the loop)."""
        held = self._tunnels.pop(node_id, None)
        if held is not None:
            for listener in held[1]:
                listener.close()
            self.sessions.unpin(held[0])

    # -- Provider interface --------------------------------------------------------------

    def check(self) -> ProviderStatus:
        """asyncssh installed, a pool file with pools, and which hosts answer (and why not)."""
        try:
            if importlib.util.find_spec("asyncssh") is None:
                return ProviderStatus(False, "asyncssh is not installed", INSTALL_HINT)
            return self._check()
        except Exception as exc:  # check() must never raise
            return ProviderStatus(False, f"check failed: {type(exc).__name__}", "see the provisioner log")

    def _probe_all(self) -> ProviderStatus:
        try:
            pools = self.pools()
        except PoolError as exc:
            return ProviderStatus(False, exc.reason, exc.hint or "fix the pool file")
        if not pools:
            return ProviderStatus(
                False, f"no SSH node pools in {self.pools_file}", "define a pool there (hosts, user, identity_file)"
            )
        parts, up = [], 0
        for pool in pools.values():
            found = self.probe_hosts(list(pool.hosts))
            ok = [h for h in pool.hosts if isinstance(found[h.name], HostInfo)]
            up += len(ok)
            gpus = _gpu_summary([found[h.name] for h in ok])
            text = f"{pool.name}: {len(ok)}/{len(pool.hosts)} hosts up{gpus}"
            bad = [found[h.name] for h in pool.hosts if isinstance(found[h.name], ProviderError)]
            if bad:
                text += "; " + "; ".join(str(getattr(b, "message", b)) for b in bad)
            parts.append(text)
        summary = clip(" | ".join(parts), 600)
        if not up:
            return ProviderStatus(False, summary, "check the pools' addresses, users and keys")
        return ProviderStatus(True, summary)

    def offers(self) -> list[Offer]:
        """Each reachable host of every pool once, with its probed capacity, price 0."""
        try:
            pools = self.pools()
        except PoolError as exc:
            log.warning("ssh: no offers: %s", exc)
            return []
        out = []
        for pool in pools.values():
            found = self.probe_hosts(list(pool.hosts))
            for host in pool.hosts:
                info = found[host.name]
                if isinstance(info, HostInfo):
                    out.append(_offer(pool.name, host, info))
                else:
                    log.info("ssh: %s offers nothing now: %s", host.where, info.message)
        return out

    def create_instance(self, request: CreateRequest) -> str:
        """Install and start the node's agent on the offer's host (see the module docstring)."""
        offer, node_id = request.offer, request.node_id
        pool = self.pool(offer.region)
        try:
            host = pool.host(offer.instance_type)
        except PoolError as exc:
            raise ProviderError(ProviderErrorKind.INVALID, str(exc)) from None
        instance_id = f"{pool.name}/{host.name}/{node_id}"
        existing = self._records.read(node_id)
        if existing is not None and existing.get("started") and self._alive(host, existing):
            self._ensure_tunnels(existing)
            return instance_id  # a retried create: the agent runs already
        info = self.host_info(host, fresh=True)
        remote.require_python(info, host)
        assert info.python is not None
        wheel_dir = wheels.wheel_set(info.python, info.machine)  # local build, outside the loop
        base = f"{info.home.rstrip('/')}/{ROOT_DIR}/{node_id}"
        record: dict[str, Any] = {
            "node_id": node_id,
            "instance_id": instance_id,
            "pool": pool.name,
            "host": host.name,
            "base": base,
            "plane": request.plane_id,
            "request_id": request.request_id,
            "started": False,
        }
        self._records.write(node_id, record)  # first: a crash from here on leaves a record to clean up
        try:
            self.sessions.run(self._install_and_start(host, info, request, wheel_dir, record), timeout_s=900)
        except BaseException as exc:
            log.warning("ssh: create of %s on %s failed; removing what it made: %s", node_id, host.where, exc)
            self._cleanup(host, record)
            raise
        log.info("ssh agent started", extra={"node_id": node_id, "host": host.where, "base": base})
        return instance_id

    async def _install_and_start(
        self, host: Host, info: HostInfo, request: CreateRequest, wheel_dir: Path, record: dict[str, Any]
    ) -> None:
        base, node_id, launch = record["base"], request.node_id, request.agent_launch
        async with self.sessions.use(host) as conn:
            await install.install(conn, host, base, wheel_dir)
            endpoints = (launch.scheduler_endpoint, launch.broker_endpoint)
            if await install.needs_tunnel(conn, host, base, endpoints, self._tunnel_mode):
                listeners, ports = await install.forward(conn, host, list(endpoints), [0, 0])
                self._hold(node_id, host, listeners)
                record["tunnels"] = {"targets": list(endpoints), "ports": ports}
                self._records.write(node_id, record)
                endpoints = (f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}")
            argv = install.agent_argv(base, host, node_id, record["instance_id"], endpoints, info, request.labels)
            env = await install.write_secrets(conn, base, launch.node_token(node_id), launch.tls_ca_pem)
            record["pid"] = await install.start(conn, host, base, [*env, *argv])
        record["started"] = True
        self._records.write(node_id, record)

    def _ensure_tunnels(self, record: Mapping[str, Any]) -> None:
        """Re-open a node's reverse tunnels on their old ports when this process lost them."""
        tunnels = record.get("tunnels")
        if not tunnels or record["node_id"] in self._tunnels:
            return
        try:
            host = self.pool(record["pool"]).host(record["host"])
        except (ProviderError, PoolError):
            return

        async def reopen() -> None:
            async with self.sessions.use(host) as conn:
                listeners, _ = await install.forward(conn, host, list(tunnels["targets"]), list(tunnels["ports"]))
                self._hold(record["node_id"], host, listeners)

        try:
            self.sessions.run(reopen(), timeout_s=self._connect_timeout * 2 + 10)
            log.info("ssh: re-opened the reverse tunnels of %s on %s", record["node_id"], host.where)
        except ProviderError as exc:
            log.warning("ssh: cannot re-open the tunnels of %s: %s", record["node_id"], exc.message)

    def _alive(self, host: Host, record: Mapping[str, Any]) -> bool:
        async def ask() -> str:
            async with self.sessions.use(host) as conn:
                argv = ["sh", "-c", remote.AGENT_ALIVE, "sh", record["base"], record["node_id"]]
                return await remote.run(conn, sh_join(argv), host, "agent status")

        try:
            return self.sessions.run(ask(), timeout_s=self._connect_timeout * 2 + 10).strip() == "up"
        except ProviderError:
            return False

    def terminate(self, instance_id: str) -> None:
        """Stop the node's agent and tasks, remove ~/.styx-ssh/<node>; an unknown node is gone."""
        pool_name, host_name, node_id = _split_id(instance_id)
        record = self._records.read(node_id)
        host = self.pool(pool_name).host(host_name) if record is None else None
        if record is None:
            # No record (made by another provisioner's home?): find the node's folder by convention.
            assert host is not None
            info = self.host_info(host, fresh=True)
            record = {"node_id": node_id, "base": f"{info.home.rstrip('/')}/{ROOT_DIR}/{node_id}"}
        else:
            try:
                host = self.pool(record["pool"]).host(record["host"])
            except (ProviderError, PoolError) as exc:
                raise ProviderError(
                    ProviderErrorKind.INVALID, f"{instance_id}: its host left the pool file ({exc})"
                ) from None
        self._cleanup(host, record, strict=True)

    def _cleanup(self, host: Host, record: Mapping[str, Any], strict: bool = False) -> None:
        """Stop the agent, delete its folder, close its tunnels, drop the record."""
        node_id = record["node_id"]

        async def stop() -> None:
            async with self.sessions.use(host) as conn:
                try:
                    argv = ["sh", "-c", remote.STOP_AGENT, "sh", record["base"], node_id, str(STOP_GRACE_S)]
                    await remote.run(conn, sh_join(argv), host, "stopping the agent", timeout_s=STOP_GRACE_S + 60)
                finally:
                    self._drop(node_id)

        try:
            self.sessions.run(stop(), timeout_s=STOP_GRACE_S + 90)
        except ProviderError as exc:
            if strict:
                raise
            log.warning("ssh: could not clean up %s on %s; the reconciler will: %s", node_id, host.where, exc.message)
            return
        self._records.delete(node_id)

    def list_instances(self) -> list[ProviderInstance]:
        """Nodes this plane's home has records of (re-opening their tunnels when lost)."""
        out = []
        for record in self._records.all():
            self._ensure_tunnels(record)
            status = InstanceStatus.RUNNING if record.get("started") else InstanceStatus.PENDING
            out.append(ProviderInstance(record["instance_id"], record["node_id"], status, str(record.get("plane", ""))))
        return out

    # -- whole pools (sky ssh up / down) ---------------------------------------------------

    def prepare(self, pool: Pool) -> dict[str, HostInfo | ProviderError]:
        """Probe every host afresh, refuse ones without python3 >= 3.11, and build the
        agent's wheel set each needs (cached): what ``sky ssh up`` does before a launch."""
        found = self.probe_hosts(list(pool.hosts), fresh=True)
        for host in pool.hosts:
            info = found[host.name]
            if isinstance(info, HostInfo):
                try:
                    remote.require_python(info, host)
                    assert info.python is not None
                    wheels.wheel_set(info.python, info.machine)
                except ProviderError as exc:
                    found[host.name] = exc
        return found

    def sweep(self, pool: Pool) -> dict[str, list[str] | ProviderError]:
        """Stop every Styx agent under ~/.styx-ssh on the pool's hosts and remove the folder
        (``sky ssh down``): host name -> the node ids removed, or why the host was not reached."""
        found = self.probe_hosts(list(pool.hosts), fresh=True)
        out: dict[str, list[str] | ProviderError] = {}
        for host in pool.hosts:
            info = found[host.name]
            if isinstance(info, ProviderError):
                out[host.name] = info
                continue
            root = f"{info.home.rstrip('/')}/{ROOT_DIR}"

            async def stop(host: Host = host, root: str = root) -> str:
                async with self.sessions.use(host) as conn:
                    try:
                        argv = ["sh", "-c", remote.SWEEP, "sh", root, str(STOP_GRACE_S), remote.STOP_AGENT]
                        return await remote.run(
                            conn, sh_join(argv), host, "removing Styx", timeout_s=STOP_GRACE_S + 120
                        )
                    finally:
                        for node_id in [n for n, (h, _) in self._tunnels.items() if h == host]:
                            self._drop(node_id)

            try:
                removed = self.sessions.run(stop(), timeout_s=STOP_GRACE_S + 150).split()
            except ProviderError as exc:
                out[host.name] = exc
                continue
            for node_id in removed:
                self._records.delete(node_id)
            out[host.name] = removed
        return out

    def close(self) -> None:
        """Close every connection (tests; the provisioner's exit does the same)."""
        self.sessions.close()


def _offer(pool: str, host: Host, info: HostInfo) -> Offer:
    name, count, memory_each = info.accelerator
    return Offer(
        NAME,
        pool,
        "",
        host.name,
        info.cpus,
        info.memory_gib,
        accelerator_name=name,
        accelerator_count=count,
        accelerator_memory_gib=memory_each,
        arch=info.arch,
        max_instances=1,
    )


def _gpu_summary(infos: list[HostInfo | ProviderError]) -> str:
    """ ", A100-SXM4-80GB x4" over the hosts' GPUs ("" without any)."""
    totals: dict[str, int] = {}
    for info in infos:
        if isinstance(info, HostInfo):
            name, count, _ = info.accelerator
            if count:
                totals[name] = totals.get(name, 0) + count
    return "".join(f", {name} x{count}" for name, count in sorted(totals.items()))


def _split_id(instance_id: str) -> tuple[str, str, str]:
    parts = instance_id.split("/")
    if len(parts) != 3 or not all(parts):
        raise ProviderError(ProviderErrorKind.INVALID, f"{instance_id!r} is not an ssh instance id (POOL/HOST/NODE)")
    return parts[0], parts[1], parts[2]


__all__ = ["NAME", "ConfigError", "SshProvider", "styx_provider"]


@hookimpl
def styx_provider() -> SshProvider:
    """Contribute the SSH provider (pools from ssh_node_pools.yaml, asyncssh imported lazily)."""
    return SshProvider()
