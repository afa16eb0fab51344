"""``sky ssh up [POOL]`` / ``sky ssh down [POOL]``: SSH node pools, as in SkyPilot.

``up`` checks each host of the pool from here (the machine holding the pool file and the
keys): it connects with the pool's login and known_hosts, probes CPUs, memory and GPUs,
refuses a host without python3 >= 3.11, and builds the agent's wheels (cached), then
prints one row per host. ``sky launch --infra ssh/POOL`` then installs agents as nodes
are needed.

``down`` terminates the pool's Styx nodes through the control plane (ListInstances, then
Terminate with a request id each), then removes whatever Styx left under ``~/.styx-ssh``
on each host (agents of a plane that is gone included): the hosts are left as found.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from styx_cli import output
from styx_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError

COLUMNS = ("HOST", "CPUS", "MEMORY", "GPUS", "STATUS")
# Seconds `sky ssh down` waits for the plane's Terminate operations.
TERMINATE_WAIT_S = 120.0


def _provider() -> Any:
    try:
        from styx_plugins.ssh.provider import SshProvider
    except ImportError as exc:  # pragma: no cover - the plugin ships with the CLI
        raise CliError(f"the SSH provider is not installed ({exc})") from None
    import importlib.util

    if importlib.util.find_spec("asyncssh") is None:
        raise CliError("sky ssh needs asyncssh: pip install 'styx[ssh]'", EXIT_USAGE)
    return SshProvider()


def _pools(provider: Any, name: str | None) -> list[Any]:
    from styx.provider import ProviderError
    from styx_plugins.ssh.pools import PoolError

    try:
        if name:
            return [provider.pool(name)]
        pools = list(provider.pools().values())
    except ProviderError as exc:
        raise CliError(exc.message, EXIT_USAGE) from None
    except PoolError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not pools:
        raise CliError(f"no SSH node pools in {provider.pools_file}; define one there (see sky ssh --help)", EXIT_USAGE)
    return pools


def cmd_ssh(args: argparse.Namespace) -> int:
    """sky ssh up|down [POOL]."""
    provider = _provider()
    try:
        pools = _pools(provider, args.pool)
        return _up(provider, pools) if args.action == "up" else _down(provider, pools)
    finally:
        provider.close()


def _up(provider: Any, pools: list[Any]) -> int:
    from styx_plugins.ssh.remote import HostInfo

    failed = 0
    for pool in pools:
        found = provider.prepare(pool)
        rows = []
        for host in pool.hosts:
            info = found[host.name]
            if isinstance(info, HostInfo):
                name, count, _ = info.accelerator
                gpus = f"{name}:{count}" if count else "-"
                rows.append([host.name, f"{info.cpus:g}", f"{info.memory_gib:g} GiB", gpus, "ready"])
            else:
                failed += 1
                rows.append([host.name, "-", "-", "-", "error"])
                output.error(info.message)
        output.info(f"ssh/{pool.name}:")
        output.print_table(COLUMNS, rows)
    if failed:
        output.error(f"{failed} host(s) not ready; fix them and run sky ssh up again")
        return EXIT_FAILED
    names = ", ".join(f"ssh/{p.name}" for p in pools)
    output.info(f"ready: sky launch --infra {names.split(', ')[0]} -- CMD")
    return EXIT_OK


def _down(provider: Any, pools: list[Any]) -> int:
    names = {p.name for p in pools}
    terminated = _terminate_through_plane(names)
    failed = 0
    for pool in pools:
        for host_name, result in provider.sweep(pool).items():
            if isinstance(result, list):
                extra = f", removed {len(result)} leftover node folder(s)" if result else ""
                output.info(f"ssh/{pool.name} {host_name}: clean{extra}")
            else:
                failed += 1
                output.error(result.message)
    if terminated:
        output.info(f"terminated {terminated} node(s) of {', '.join(sorted(names))}")
    return EXIT_FAILED if failed else EXIT_OK


def _terminate_through_plane(pools: set[str]) -> int:
    """Terminate the plane's ssh instances on these pools; how many were terminated."""
    from styx.v1 import provisioner_pb2
    from styx_cli import services
    from styx_cli.client import request_id

    with services.provisioner() as client:
        listed = client.call("ListInstances", provisioner_pb2.ListInstancesRequest(provider="ssh"))
        mine = [i for i in listed.instances if i.instance_id.split("/", 1)[0] in pools]
        ops = [
            client.call("Terminate", provisioner_pb2.TerminateRequest(request_id=request_id(), node_id=i.node_id))
            for i in mine
        ]
        deadline = time.monotonic() + TERMINATE_WAIT_S
        done = (provisioner_pb2.OPERATION_STATE_DONE, provisioner_pb2.OPERATION_STATE_FAILED)
        for op in ops:
            while op.state not in done and time.monotonic() < deadline:
                time.sleep(0.2)
                op = client.call("GetOperation", provisioner_pb2.GetOperationRequest(operation_id=op.operation_id))
            if op.state == provisioner_pb2.OPERATION_STATE_FAILED:
                output.error(f"terminate {op.node_id}: {op.error.message}")
    return len(mine)
