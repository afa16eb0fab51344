"""SSH connections of the SSH provider (asyncssh), driven from synchronous provider calls.

``Sessions`` owns one asyncio loop in a daemon thread and at most one connection per host,
reused by every call (probes, installs, the agents' reverse tunnels). Provider methods run
on the provisioner's threads and wait on ``Sessions.run(coro)``.

Host keys: the pool's ``known_hosts`` file is honoured. A host with an entry there must
present that key (a mismatch is refused, naming the file and the fix); a host without one
is refused too, unless the pool says ``accept_new_host_keys: true``, in which case the key
seen is appended to the file (OpenSSH's ``StrictHostKeyChecking=accept-new``).

Every failure becomes a ``ProviderError`` with a one-line message naming the host:
unreachable (CAPACITY, so the broker tries another host), refused key or host key
(AUTH), anything else (INTERNAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

from styx.provider import ProviderError, ProviderErrorKind, clip
from styx_plugins.ssh.pools import Host

log = logging.getLogger(__name__)
# asyncssh logs every channel and the full command line at INFO: the provider's own log
# lines say what happened; keep asyncssh's warnings and errors.
if logging.getLogger("asyncssh").level == logging.NOTSET:
    logging.getLogger("asyncssh").setLevel(logging.WARNING)

T = TypeVar("T")
INSTALL_HINT = "pip install 'styx[ssh]'"


class Sessions:
    """A loop thread and one cached connection per host. Thread-safe."""

    def __init__(self, connect_timeout_s: float = 5.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: dict[tuple[str, str, int], Any] = {}
        self._connecting: dict[tuple[str, str, int], asyncio.Lock] = {}
        # On the loop: operations using each host's connection now, and tunnels riding on it.
        self._users: dict[tuple[str, str, int], int] = {}
        self._pins: dict[tuple[str, str, int], int] = {}

    # -- the loop ----------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="styx-ssh", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 600.0) -> T:
        """Run ``coro`` on the loop thread and wait for its result (its exceptions propagate)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise ProviderError(ProviderErrorKind.INTERNAL, f"ssh operation took over {timeout_s:g} s") from None

    def close(self) -> None:
        """Close every connection (and so every tunnel) and stop the loop."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shut() -> None:
            for conn in list(self._conns.values()):
                conn.close()
            self._conns.clear()

        asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)

    # -- connections (call on the loop) --------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, host: Host) -> AsyncIterator[Any]:
        """The host's connection for one operation. It is closed when the last operation
        using it ends, unless a tunnel rides on it (``pin``): an idle host holds no sshd
        session, and one operation never closes the connection under another."""
        key = _key(host)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            yield await self.connect(host)
        finally:
            self._users[key] -= 1
            if not self._users[key] and not self._pins.get(key):
                self._close(key)

    def pin(self, host: Host) -> None:
        """Keep the host's connection open for a tunnel (call on the loop)."""
        key = _key(host)
        self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, host: Host) -> None:
        """A tunnel on the host's connection closed; close the connection when unused."""
        key = _key(host)
        self._pins[key] = max(0, self._pins.get(key, 0) - 1)
        if not self._pins[key] and not self._users.get(key):
            self._close(key)

    def _close(self, key: tuple[str, str, int]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    async def connect(self, host: Host) -> Any:
        """The host's open connection, made (and its host key checked) on first use."""
        key = _key(host)
        conn = self._conns.get(key)
        if conn is not None and not conn.is_closed():
            return conn
        lock = self._connecting.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and not conn.is_closed():
                return conn
            conn = await _open(host, self.connect_timeout_s)
            self._conns[key] = conn
            return conn


def _key(host: Host) -> tuple[str, str, int]:
    return (host.user, host.ip, host.port)


async def _open(host: Host, timeout_s: float) -> Any:
    try:
        import asyncssh
    except ImportError:
        raise ProviderError(ProviderErrorKind.INVALID, f"asyncssh is not installed ({INSTALL_HINT})") from None
    known_file = Path(host.known_hosts)
    has_entry = _has_entry(known_file, host)
    if not has_entry and not host.accept_new_host_keys:
        known: Any = str(known_file) if known_file.is_file() else ()
    else:
        known = str(known_file) if has_entry else None  # None: accept the new key, recorded below
    options: dict[str, Any] = {
        "username": host.user,
        "port": host.port,
        "known_hosts": known,
        "config": None,  # the pool file is the configuration, not ~/.ssh/config
        "connect_timeout": timeout_s,
        "login_timeout": timeout_s,
        "keepalive_interval": 15,
    }
    if host.identity_file:
        options["client_keys"] = [host.identity_file]
        options["agent_path"] = None
    if host.password:
        options["password"] = host.password
    else:
        options["kbdint_auth"] = False
        options["password_auth"] = False
    if host.proxy_jump:
        options["tunnel"] = host.proxy_jump
    try:
        conn = await asyncssh.connect(host.ip, **options)
    except asyncssh.HostKeyNotVerifiable:
        if has_entry:
            raise ProviderError(
                ProviderErrorKind.AUTH,
                f"{host.where}: host key does not match {known_file} (a reinstalled host, or someone in "
                f"between); if the host was reinstalled: ssh-keygen -R {host.ip} -f {known_file}",
            ) from None
        raise ProviderError(
            ProviderErrorKind.AUTH,
            f"{host.where}: host key unknown (not in {known_file}); add it (ssh-keyscan {host.ip} >> "
            f"{known_file}) or set `accept_new_host_keys: true` on pool {host.pool}",
        ) from None
    except asyncssh.PermissionDenied:
        how = f"key {host.identity_file}" if host.identity_file else "the default keys / password"
        raise ProviderError(
            ProviderErrorKind.AUTH,
            f"{host.where}: login refused with {how}; check `user` and `identity_file` of pool {host.pool}",
        ) from None
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        why = clip(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc) or type(exc).__name__)
        raise ProviderError(ProviderErrorKind.CAPACITY, f"{host.where}: cannot connect ({why})") from None
    if known is None:
        _remember(known_file, host, conn.get_server_host_key())
    return conn


def _entry_name(host: Host) -> str:
    return host.ip if host.port == 22 else f"[{host.ip}]:{host.port}"


def _has_entry(path: Path, host: Host) -> bool:
    """Whether ``path`` holds any key for the host (hashed names included)."""
    if not path.is_file():
        return False
    import asyncssh

    try:
        keys = asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError, asyncssh.Error):
        return False
    trusted, trusted_ca, revoked, *_ = keys.match(host.ip, host.ip, host.port)
    return bool(trusted or trusted_ca or revoked)


def _remember(path: Path, host: Host, key: Any) -> None:
    """Append the key a new host presented (accept_new_host_keys)."""
    if key is None:
        return
    line = f"{_entry_name(host)} {key.export_public_key('openssh').decode().split()[0]} "
    line += key.export_public_key("openssh").decode().split()[1] + "\n"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(line)
    log.info("ssh: recorded the new host key of %s in %s", host.name, path)
