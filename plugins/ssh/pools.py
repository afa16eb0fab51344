"""SSH node pools: ``ssh_node_pools.yaml`` in SkyPilot's format, validated up front.

The file maps a pool name to its hosts and their login::

    my-box:                          # infra: ssh/my-box
      hosts:
        - 192.168.1.10               # a host is an address ...
        - ip: 192.168.1.11           # ... or a mapping overriding the pool's login
          user: alice
          identity_file: ~/.ssh/alice
          port: 2222
      user: ubuntu
      identity_file: ~/.ssh/id_ed25519
      password: ...                  # optional; a key is better
      proxy_jump: bastion.example.com   # optional jump host ([user@]host[:port])
      accept_new_host_keys: false    # optional: trust a host key seen the first time
      known_hosts: ~/.ssh/known_hosts  # optional (Styx only): the known_hosts file

It is read from ``STYX_SSH_NODE_POOLS`` when set, else ``$STYX_HOME/ssh_node_pools.yaml``
(``~/.styx/ssh_node_pools.yaml`` by default). Every mistake is a ``PoolError`` whose
one-line message names the file, the pool and the key (with the nearest known key for a
typo), never a traceback at connect time.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POOL_KEYS = ("hosts", "user", "identity_file", "password", "proxy_jump", "accept_new_host_keys", "known_hosts", "port")
HOST_KEYS = ("ip", "user", "identity_file", "password", "proxy_jump", "port")
FILE_NAME = "ssh_node_pools.yaml"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class PoolError(ValueError):
    """The pool file is missing, malformed or names an unknown pool: ``reason`` and ``hint``."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.reason} ({self.hint})" if self.hint else self.reason


@dataclass(frozen=True)
class Host:
    """One machine of a pool and how to log in to it."""

    pool: str
    ip: str
    user: str
    port: int = 22
    identity_file: str = ""
    password: str = field(default="", repr=False)
    proxy_jump: str = ""
    known_hosts: str = ""
    accept_new_host_keys: bool = False

    @property
    def name(self) -> str:
        """The host as offers and instance ids name it: its address (with a non-22 port)."""
        return self.ip if self.port == 22 else f"{self.ip}:{self.port}"

    @property
    def where(self) -> str:
        """``ssh/POOL HOST`` for messages."""
        return f"ssh/{self.pool} {self.user}@{self.name}"


@dataclass(frozen=True)
class Pool:
    """A named set of hosts (``infra: ssh/NAME``)."""

    name: str
    hosts: tuple[Host, ...]

    def host(self, name: str) -> Host:
        """The host called ``name`` (see ``Host.name``); ``PoolError`` when the pool lacks it."""
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise PoolError(f"ssh/{self.name}: no host {name!r}", f"its hosts: {known}")


def pools_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the pool file is read from (see the module docstring)."""
    env = os.environ if env is None else env
    explicit = env.get("STYX_SSH_NODE_POOLS", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("STYX_HOME", "").strip() or str(Path.home() / ".styx")
    return Path(home).expanduser() / FILE_NAME


def load_pools(path: Path) -> dict[str, Pool]:
    """Every pool of the file; an absent file has none. ``PoolError`` on any mistake."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise PoolError(f"{path}: cannot read ({exc.strerror})", "make it readable") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise PoolError(f"{path}: not valid YAML{at}", "fix the file's syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PoolError(f"{path}: must map pool names to pools", "write e.g. `my-pool: {hosts: [10.0.0.1]}`")
    return {str(name): _pool(path, str(name), spec) for name, spec in data.items()}


def get_pool(path: Path, name: str) -> Pool:
    """The pool ``name``; ``PoolError`` naming the known ones when there is no such pool."""
    pools = load_pools(path)
    if name in pools:
        return pools[name]
    if not pools:
        raise PoolError(f"ssh/{name}: no SSH node pools in {path}", f"define pool {name!r} there (see sky ssh --help)")
    raise PoolError(f"ssh/{name}: no such pool in {path}", f"known pools: {', '.join(sorted(pools))}")


def _pool(path: Path, name: str, spec: Any) -> Pool:
    where = f"{path}: pool {name!r}"
    if not name or not set(name) <= _NAME_CHARS:
        raise PoolError(f"{where}: a pool name is letters, digits, '.', '_' and '-'", "rename the pool")
    if not isinstance(spec, dict):
        raise PoolError(f"{where}: must be a mapping with `hosts`", "write e.g. `hosts: [10.0.0.1]`")
    _known_keys(where, spec, POOL_KEYS)
    hosts = spec.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        raise PoolError(f"{where}: `hosts` must be a non-empty list", "list addresses, e.g. `hosts: [10.0.0.1]`")
    defaults: dict[str, Any] = {
        "user": _text(where, spec, "user", os.environ.get("USER", "root")),
        "identity_file": _text(where, spec, "identity_file", ""),
        "password": _text(where, spec, "password", ""),
        "proxy_jump": _text(where, spec, "proxy_jump", ""),
        "port": _port(where, spec, 22),
    }
    accept = spec.get("accept_new_host_keys", False)
    if not isinstance(accept, bool):
        raise PoolError(f"{where}: `accept_new_host_keys` must be true or false", "write true or false")
    known = _text(where, spec, "known_hosts", "~/.ssh/known_hosts")
    out: list[Host] = []
    for i, item in enumerate(hosts):
        at = f"{where} hosts[{i}]"
        if isinstance(item, str) and item.strip():
            values: dict[str, Any] = {**defaults, "ip": item.strip()}
        elif isinstance(item, dict):
            _known_keys(at, item, HOST_KEYS)
            ip = _text(at, item, "ip", "")
            if not ip:
                raise PoolError(f"{at}: needs `ip`", "write e.g. `- ip: 10.0.0.1`")
            values = {
                "ip": ip,
                "user": _text(at, item, "user", defaults["user"]),
                "identity_file": _text(at, item, "identity_file", defaults["identity_file"]),
                "password": _text(at, item, "password", defaults["password"]),
                "proxy_jump": _text(at, item, "proxy_jump", defaults["proxy_jump"]),
                "port": _port(at, item, defaults["port"]),
            }
        else:
            raise PoolError(f"{at}: a host is an address or a mapping with `ip`", "write e.g. `- 10.0.0.1`")
        if any(c.isspace() or c in "/@" for c in values["ip"]):
            raise PoolError(f"{at}: {values['ip']!r} is not a host name or address", "write e.g. 10.0.0.1")
        if values["identity_file"]:
            values["identity_file"] = str(Path(values["identity_file"]).expanduser())
        out.append(Host(pool=name, known_hosts=str(Path(known).expanduser()), accept_new_host_keys=accept, **values))
    names = [h.name for h in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PoolError(f"{where}: host {dupes[0]} is listed twice", "list each host once")
    return Pool(name, tuple(out))


def _known_keys(where: str, spec: Mapping[Any, Any], allowed: tuple[str, ...]) -> None:
    for key in spec:
        if str(key) not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(allowed)}"
            raise PoolError(f"{where}: unknown key {key!r}", hint)


def _text(where: str, spec: Mapping[str, Any], key: str, default: str) -> str:
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise PoolError(f"{where}: `{key}` must be text", f"write e.g. `{key}: ...`")
    return str(value).strip()


def _port(where: str, spec: Mapping[str, Any], default: int) -> int:
    value = spec.get("port", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise PoolError(f"{where}: `port` must be a number 1-65535, got {value!r}", "write e.g. `port: 22`")
    return value
