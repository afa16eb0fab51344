"""sky local up | down | status: manage the local control plane under STYX_HOME."""

from __future__ import annotations

import argparse
import json
import time

from styx_cli import output
from styx_cli.config import styx_home
from styx_cli.errors import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CliError


def cmd_local(args: argparse.Namespace) -> int:
    """Dispatch ``sky local <action>``."""
    from styx import localplane

    home = styx_home()
    if args.action != "up" and getattr(args, "tls", None) is not None:
        raise CliError("--tls / --no-tls go with `sky local up`", EXIT_USAGE)
    if args.action == "up":
        before = localplane.status(home)
        if not before.running:
            output.info("starting the local control plane (scheduler, broker, provisioner) ...")
        try:
            localplane.ensure(home, tls=getattr(args, "tls", None))
        except localplane.PlaneError as exc:
            raise CliError(f"cannot start the local control plane: {exc}", EXIT_UNREACHABLE) from exc
        return _print_status(localplane.status(home, check_health=True), as_json=False)
    if args.action == "down":
        started = time.monotonic()
        if localplane.stop(home):
            print(f"stopped the local control plane in {home} ({time.monotonic() - started:.1f}s)")
        else:
            print(f"no local control plane in {home}")
        return EXIT_OK
    return _print_status(localplane.status(home, check_health=True), as_json=args.json)


def _print_status(st: object, as_json: bool) -> int:
    from styx import localplane

    assert isinstance(st, localplane.PlaneStatus)
    if as_json:
        print(
            json.dumps(
                {
                    "home": str(st.home),
                    "running": st.running,
                    "tls": bool(st.plane and st.plane.tls),
                    "tls_ca": st.plane.tls_ca if st.plane else "",
                    "services": [
                        {
                            "name": s.name,
                            "endpoint": s.endpoint,
                            "pid": s.pid,
                            "alive": s.alive,
                            "health": s.health,
                            "log_file": s.log_file,
                        }
                        for s in st.services
                    ],
                },
                indent=2,
            )
        )
        return EXIT_OK if st.running else EXIT_UNREACHABLE
    if st.plane is None:
        print(f"no local control plane in {st.home}; start one with: sky local up")
        return EXIT_UNREACHABLE
    rows = [["SERVICE", "ENDPOINT", "PID", "STATE", "LOG"]]
    for s in st.services:
        state = s.health if s.alive else "DEAD"
        rows.append([s.name, s.endpoint, str(s.pid), state, s.log_file])
    if st.running:
        note = ""
    elif not st.plane.ready and all(s.alive for s in st.services):
        note = " (starting)"
    else:
        note = " (stale: run sky local up)"
    title = f"local control plane in {st.home}{note}"
    output.print_kv(title, rows)
    if st.plane.tls:
        ca = st.plane.tls_ca or "as STYX_TLS_CA / STYX_TLS say"
        print(f"TLS: on; clients verify against {ca}")
    return EXIT_OK if st.running else EXIT_UNREACHABLE
