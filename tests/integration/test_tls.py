"""TLS between every part of the control plane, with real processes and a private CA.

The scheduler, broker and provisioner serve TLS (``--tls-cert``/``--tls-key`` through
``STYX_TLS_*``), dial each other with ``STYX_TLS_CA``, and the local provider's agent
inherits that environment, so a task that runs proves every hop verified its peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from helpers import ServiceStack, free_port, run_sky, wait_until
from styx.common.clients import open_channel
from styx.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

pytest.importorskip("cryptography.x509")
from pki import make_pki


def test_the_whole_plane_runs_a_task_over_verified_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path / "pki")
    token = secrets.token_hex(16)
    tls = {"STYX_TLS_CERT": str(pki["cert"]), "STYX_TLS_KEY": str(pki["key"]), "STYX_TLS_CA": str(pki["ca"])}
    env = {
        **os.environ,
        **tls,
        "STYX_HOME": str(tmp_path / "home"),
        "STYX_TOKEN": token,
        "STYX_LOCAL_NODE_CPUS": "2",
        "STYX_LOCAL_NODE_MEMORY_GIB": "2",
    }
    ports = {n: free_port() for n in ("scheduler", "broker", "provisioner")}
    stack = ServiceStack(root=tmp_path, token=token, env=env, ports=ports)
    monkeypatch.setenv("STYX_TLS_CA", str(pki["ca"]))  # this test's own clients trust the CA
    try:
        stack.start("provisioner", "broker", "scheduler")
        spec = common_pb2.TaskSpec(name="tls", run="echo over tls")
        job = stack.scheduler().SubmitJob(
            scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=scheduler_pb2.JobSpec(tasks=[spec])),
            timeout=30,
        )
        task_id = job.tasks[0].task_id
        request = scheduler_pb2.GetTaskRequest(task_id=task_id)
        done = wait_until(
            lambda: (
                (t := stack.scheduler().GetTask(request, timeout=10)).state == common_pb2.TASK_STATE_SUCCEEDED and t
            ),
            timeout=60,
            message="the task to succeed over TLS",
        )
        assert done.exit_code == 0
        # The CLI speaks TLS too, from the same environment.
        cli = run_sky(["status", "--json"], tmp_path / "cli", STYX_ENDPOINT=stack.endpoint("scheduler"),
                      STYX_TOKEN=token, STYX_TLS_CA=str(pki["ca"]))  # fmt: skip
        assert cli.returncode == 0 and task_id in cli.stdout, cli.stderr
        # Neither a plaintext client nor one trusting another CA gets an answer.
        for ca in ("", str(pki["other_ca"])):
            monkeypatch.setenv("STYX_TLS_CA", ca)
            stub = scheduler_pb2_grpc.SchedulerStub(open_channel(stack.endpoint("scheduler"), token))
            with pytest.raises(grpc.RpcError) as err:
                stub.GetTask(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stack.stop_services()
        # The local provider's agents live in their own sessions: stop them too.
        for record in (tmp_path / "home" / "local" / "instances").glob("*.json"):
            pid = int(json.loads(record.read_text()).get("pid", 0))
            if pid:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)


def test_tls_misconfiguration_is_a_one_line_error(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    half = subprocess.run(
        [sys.executable, "-m", "styx.broker", "--port", "0", "--tls-cert", str(pki["cert"])],
        capture_output=True, text=True, timeout=60, env={**os.environ, "STYX_TOKEN": "t"},
    )  # fmt: skip
    assert half.returncode == 1 and "--tls-cert and --tls-key go together" in half.stderr
    assert "Traceback" not in half.stderr
    missing = run_sky(["status"], tmp_path / "cli", STYX_ENDPOINT="127.0.0.1:9", STYX_TOKEN="t",
                      STYX_TLS_CA=str(tmp_path / "nope.pem"))  # fmt: skip
    assert missing.returncode == 2 and "STYX_TLS_CA: cannot read" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) <= 2 and "Traceback" not in missing.stderr
