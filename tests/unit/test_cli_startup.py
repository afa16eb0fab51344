"""`sky --help` and `sky version` must start fast: no grpc, no rich, no generated stubs."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from styx_cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'rich', 'google', 'sqlalchemy', 'yaml'))
print('HEAVY=' + ','.join(heavy))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["version"],
        ["--help"],
        ["run", "--help"],
        ["launch", "--help"],
        ["queue", "--help"],
        [],
        ["check", "--help"],
        ["show-gpus", "--help"],
        ["catalog", "--help"],
        ["catalog", "import", "--help"],
    ],
)
def test_light_commands_import_no_grpc(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=60)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line == ["HEAVY="], proc.stdout + proc.stderr
