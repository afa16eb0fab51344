"""A Node.js client (grpc-js + proto-loader, from the protos `sky api proto` writes) drives the plane.

It submits a DAG, watches its events for several of its own keepalive intervals, reads
logs, cancels a job, and reads the error details of a NaN cpus request and of a reused
request_id (tests/node/client.js). Skipped when node or npm is missing; .ci/run installs
the npm packages (tests/node/package.json) before the suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import SkyCli

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def _node_ready() -> str:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        if shutil.which("npm") is None:
            return "npm is not installed"
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, capture_output=True, timeout=300
        )
        if proc.returncode != 0:
            return f"npm install failed: {proc.stderr.decode(errors='replace')[-300:]}"
    return ""


def test_a_node_client_submits_watches_reads_logs_cancels_and_reads_error_details(sky: SkyCli, tmp_path: Path) -> None:
    missing = _node_ready()
    if missing:
        pytest.skip(missing)
    sky.ok("local", "up")
    sky.ok("api", "proto", str(tmp_path / "protos"))
    plane = json.loads((sky.home / "local" / "plane.json").read_text())
    proc = subprocess.run(
        [
            "node",
            str(NODE_DIR / "client.js"),
            str(tmp_path / "protos"),
            plane["scheduler"],
            str(sky.home / "local" / "token"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["repeat_same_job"] is True
    assert seen["events"].count("EVENT_TYPE_SUCCEEDED") == 2 and "EVENT_TYPE_SUBMITTED" in seen["events"]
    assert seen["watch_ms"] >= 3 * seen["keepalive_ms"], "the stream must outlive several keepalive intervals"
    assert seen["logs"] == "from-b\n"
    assert seen["cancelled_state"] == "JOB_STATE_CANCELLED"
    nan = seen["nan"]
    assert nan["code"] == 3 and nan["status"]["code"] == 3  # INVALID_ARGUMENT, in the trailer too
    details = {d["type_url"].rsplit("/", 1)[-1]: d["value"] for d in nan["status"]["details"]}
    assert "job.tasks[0].resources.cpus" in details["google.rpc.BadRequest"]
    assert "styx.dev" in details["google.rpc.ErrorInfo"]
    assert seen["reused"]["code"] == 6 and "request_id" in seen["reused"]["details"]  # ALREADY_EXISTS
