"""Regenerate the committed Python stubs under services/styx/v1 from proto/styx/v1, and copy
the .proto files beside them (package data of styx.v1).

Run from anywhere: ``python proto/generate.py``. The generator is pinned through the
``test`` extra (grpcio-tools==1.85.1 in pyproject.toml; the .pyi files come from protoc's
own ``--pyi_out``, not mypy-protobuf), so the output is reproducible;
tests/unit/test_generated_code.py fails when the committed files are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def generate(out_dir: Path) -> None:
    """Compile every proto/styx/v1/*.proto into ``out_dir`` (which gets styx/v1/...)."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "styx" / "v1").glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    # The contract itself ships in the package too (`sky api proto DIR` writes it out), so
    # clients in other languages generate from the protos of the version they talk to.
    for source in sources:
        (out_dir / source).write_bytes((PROTO_ROOT / source).read_bytes())


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "services"
    generate(target)
    print(f"generated stubs under {target / 'styx' / 'v1'}")
