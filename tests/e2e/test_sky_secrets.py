"""Task secrets (a task YAML's ``secrets:`` and ``sky launch/run --secret``), end to end.

A secret reaches the task's environment (the task prints a SHA-256 of it, never the value),
while every output shows ``<redacted>``: sky status / queue / logs, their ``--json``, the
events of ``sky status -v``, the job spec of GetJob / ListJobs over gRPC, an error about a
bad value. Then every file under STYX_HOME (the scheduler's SQLite store with its WAL,
every service and agent log, the task sandboxes) is searched for the value: none holds it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from helpers import SkyCli

YAML_SECRET = "yaml-s3cr3t-5f0c1e9a77"
CLI_SECRET = "cli-t0ken-8d2b44e1c3"
# Prints the hashes of both secrets, so the test sees they arrived without seeing them.
HASHER = (
    "import hashlib, os\n"
    "print(*(hashlib.sha256(os.environ.get(k, '-').encode()).hexdigest() for k in ('API_KEY', 'CLI_TOKEN')))"
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _every_file(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file() and not p.is_symlink()]


def test_secrets_reach_the_task_and_appear_in_no_output_or_file(sky: SkyCli, tmp_path: Path) -> None:
    # The plane starts first, without CLI_TOKEN in its environment: only --secret can carry it.
    sky.ok("local", "up")
    (tmp_path / "hasher.py").write_text(HASHER + "\n")
    task = tmp_path / "secret.yaml"
    task.write_text(
        "name: secretive\n"
        f"secrets:\n  API_KEY: {YAML_SECRET}\n  CLI_TOKEN:\n"
        f"run: {sys.executable} {tmp_path / 'hasher.py'}\n"
    )
    launched = sky("launch", str(task), "--secret", "CLI_TOKEN", CLI_TOKEN=CLI_SECRET)
    assert launched.returncode == 0, launched.stderr
    assert f"{_sha(YAML_SECRET)} {_sha(CLI_SECRET)}" in launched.stdout, "the task did not get both secrets"

    task_id = next(t["task_id"] for t in json.loads(sky.ok("status", "--json").stdout) if t["name"] == "secretive")
    shown = sky.task(task_id)
    assert shown["secrets"] == {"API_KEY": "<redacted>", "CLI_TOKEN": "<redacted>"}
    outputs = [launched.stdout + launched.stderr]
    for args in (
        ("status", "--json", task_id),
        ("status", "-v", task_id),
        ("status", "-v", "--json", task_id),
        ("queue", shown["job_id"]),
        ("queue", "--json", shown["job_id"]),
        ("queue", "--json"),
        ("logs", task_id),
    ):
        proc = sky.ok(*args)
        outputs.append(proc.stdout + proc.stderr)

    # The job spec over the API, as any gRPC client reads it.
    from styx.common.clients import open_channel
    from styx.v1 import scheduler_pb2, scheduler_pb2_grpc

    plane = json.loads((sky.home / "local" / "plane.json").read_text())
    stub = scheduler_pb2_grpc.SchedulerStub(
        open_channel(plane["scheduler"], (sky.home / "local" / "token").read_text().strip())
    )
    job = stub.GetJob(scheduler_pb2.GetJobRequest(job_id=shown["job_id"]), timeout=10)
    assert dict(job.tasks[0].spec.secrets) == {"API_KEY": "<redacted>", "CLI_TOKEN": "<redacted>"}
    listed = stub.ListJobs(scheduler_pb2.ListJobsRequest(), timeout=10)
    outputs += [str(job), str(listed), str(stub.GetTask(scheduler_pb2.GetTaskRequest(task_id=task_id), timeout=10))]

    # A bad value is refused without being quoted back, in the message or its details.
    import grpc

    from styx.v1 import common_pb2

    bad_spec = common_pb2.TaskSpec(name="bad", run="true", secrets={"BAD": YAML_SECRET + "\x00"})
    try:
        stub.SubmitJob(
            scheduler_pb2.SubmitJobRequest(request_id="secret-bad-1", job=scheduler_pb2.JobSpec(tasks=[bad_spec])),
            timeout=10,
        )
        raise AssertionError("a secret holding NUL was accepted")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "secrets" in (err.details() or "")
        outputs.append(f"{err.details()} {err.trailing_metadata()}")

    for text in outputs:
        assert YAML_SECRET not in text and CLI_SECRET not in text, text
    files = _every_file(sky.home)
    store = [p for p in files if p.name.startswith("scheduler.db")]
    logs = [p for p in files if p.suffix == ".log"]
    assert store and logs
    assert any(b"API_KEY" in p.read_bytes() for p in store), "the task's secret keys should be in the store"
    for path in files:
        data = path.read_bytes()
        assert YAML_SECRET.encode() not in data and CLI_SECRET.encode() not in data, f"{path} holds a secret"
    key_file = sky.home / "local" / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_a_secret_wins_over_an_env_and_sky_run_takes_secret(sky: SkyCli) -> None:
    proc = sky(
        "run",
        "--env",
        "API_KEY=plain",
        "--secret",
        f"API_KEY={YAML_SECRET}",
        "--",
        sys.executable,
        "-c",
        "import hashlib, os; print(hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest())",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == _sha(YAML_SECRET)


def test_a_plane_keyed_by_styx_secret_key_keeps_no_key_file_and_tasks_never_see_it(fresh_sky: SkyCli) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    probe = "import hashlib, os; print('KEY' if 'STYX_SECRET_KEY' in os.environ else 'NOKEY', os.environ['S'])"
    proc = fresh_sky("run", "--secret", "S=given", "--", sys.executable, "-c", probe, STYX_SECRET_KEY=key)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["NOKEY", "given"]
    assert not (fresh_sky.home / "local" / "secret.key").exists(), "STYX_SECRET_KEY should win over the key file"
    assert key not in "".join(p.read_text(errors="replace") for p in _every_file(fresh_sky.home))
