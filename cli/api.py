"""`sky api proto DIR`: write the gRPC contract this sky speaks, for clients in other languages."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from styx_cli.errors import EXIT_OK, EXIT_USAGE, CliError
from styx_cli.output import info


def cmd_api_proto(args: argparse.Namespace) -> int:
    """Write styx/v1/*.proto (the files shipped in the styx.v1 package) under DIR, keeping
    their import paths, so `protoc -I DIR` or `buf generate DIR` finds every import."""
    target = Path(args.dir) / "styx" / "v1"
    try:
        target.mkdir(parents=True, exist_ok=True)
        names = []
        for item in sorted(resources.files("styx.v1").iterdir(), key=lambda p: p.name):
            if item.name.endswith(".proto"):
                (target / item.name).write_bytes(item.read_bytes())
                names.append(item.name)
    except OSError as exc:
        raise CliError(f"cannot write to {args.dir}: {exc.strerror}", EXIT_USAGE) from None
    if not names:
        raise CliError("this installation has no .proto files (styx.v1 package data is missing)")
    info(f"wrote {len(names)} files to {target}: {', '.join(names)}")
    return EXIT_OK
