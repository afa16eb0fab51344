"""SkyPilot habits of the `sky` command: envs given on the command line, exit codes,
typo'd GPU names, and the small inconsistencies of issue 12, each through the real CLI.

Usage errors must come before the local plane starts: those tests use a home of their
own and check that no plane was started there (no plane.json, no lock).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import SkyCli

ECHO_ENV = f"{sys.executable} -c \"import os; print('HF=' + os.environ['HF_TOKEN'], 'B=' + os.environ.get('B', '-'))\""


@pytest.fixture
def idle_sky(tmp_path: Path) -> Iterator[SkyCli]:
    """A home where no plane may start: asserts afterwards that none did."""
    sky = SkyCli(tmp_path / "home")
    (tmp_path / "home").mkdir()
    yield sky
    started = (sky.home / "local" / "plane.json").exists()
    if started:
        sky("local", "down", timeout=90)
    assert not started, "a usage error started the local plane"


def _usage_error(proc: object, *words: str) -> str:
    rc, err = proc.returncode, proc.stderr  # type: ignore[attr-defined]
    assert rc == 2, (rc, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) <= 2, err
    for word in words:
        assert word in err, err
    return str(err)


def test_an_env_without_value_is_refused_before_the_plane_starts(idle_sky: SkyCli, tmp_path: Path) -> None:
    task = tmp_path / "hf.yaml"
    task.write_text("envs:\n  HF_TOKEN:\nrun: echo $HF_TOKEN\n")
    started = time.monotonic()
    err = _usage_error(idle_sky("launch", str(task)), "HF_TOKEN", "--env HF_TOKEN=VALUE", "--env-file")
    assert str(task) in err
    assert time.monotonic() - started < 10
    secret = tmp_path / "secret.yaml"
    secret.write_text("secrets:\n  API_KEY:\nrun: 'true'\n")
    _usage_error(idle_sky("launch", str(secret)), "API_KEY", "--secret API_KEY")


def test_usage_errors_come_before_the_plane_starts(idle_sky: SkyCli, tmp_path: Path) -> None:
    _usage_error(idle_sky("run", "--env", "1BAD=x", "--", "true"), "'1BAD'", "not starting with a digit")
    _usage_error(idle_sky("launch", "--env", "1BAD=x", "--", "true"), "'1BAD'")
    _usage_error(idle_sky("run", "--cpus", "-1", "--", "true"), "--cpus", "positive")
    _usage_error(idle_sky("launch", str(tmp_path), "-y"), "is a directory", "--workdir")
    (tmp_path / "bad.env").write_text("OK=1\nnot a pair\n")
    _usage_error(idle_sky("run", "--env-file", str(tmp_path / "bad.env"), "--", "true"), "line 2", "KEY=VALUE")


def test_env_file_and_env_give_the_values(sky: SkyCli, tmp_path: Path) -> None:
    task = tmp_path / "hf.yaml"
    task.write_text(f"envs:\n  HF_TOKEN:\n  B: from-file\nrun: {ECHO_ENV}\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text("# a dotenv file\nexport HF_TOKEN='tok en'\nB=\"dotenv\" # comment\n")
    proc = sky("launch", str(task), "--env-file", str(dotenv))
    assert proc.returncode == 0, proc.stderr
    assert "HF=tok en B=dotenv" in proc.stdout
    # --env wins over --env-file, as in SkyPilot.
    proc = sky("launch", str(task), "--env-file", str(dotenv), "--env", "HF_TOKEN=flag")
    assert proc.returncode == 0, proc.stderr
    assert "HF=flag B=dotenv" in proc.stdout
    proc = sky("run", "--env-file", str(dotenv), "--", ECHO_ENV)
    assert proc.returncode == 0, proc.stderr
    assert "HF=tok en B=dotenv" in proc.stdout


def test_a_task_killed_by_a_signal_exits_128_plus_n(sky: SkyCli) -> None:
    proc = sky("run", "--name", "killed", "--", "kill -9 $$")
    assert proc.returncode == 137, proc.stderr
    assert "killed by signal 9 (SIGKILL)" in proc.stderr
    task = next(t for t in json.loads(sky.ok("status", "--json").stdout) if t["name"] == "killed")
    assert task["exit_code"] == 137
    assert "137" in sky.ok("status", task["task_id"]).stdout


def test_an_unknown_gpu_is_refused_at_once_with_did_you_mean(sky: SkyCli) -> None:
    sky.ok("local", "up")
    started = time.monotonic()
    proc = sky("run", "--gpus", "A1000:1", "--", "true")
    took = time.monotonic() - started
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert "unknown accelerator A1000" in err and "did you mean A100" in err, err
    assert len(err.splitlines()) <= 2 and len(err) < 250, err
    assert took < 5, f"took {took:.1f}s"


def test_sky_logs_habits(sky: SkyCli, tmp_path: Path) -> None:
    out = sky.ok("launch", "--detach", "--name", "lines", "--", "for i in 1 2 3 4 5; do echo line$i; done").stdout
    job_id = out.split()[0]
    task_id = out.split()[1]
    assert job_id.startswith("j-") and task_id.startswith("t-"), out
    # Follow until the task ends, by the job's id.
    assert sky.ok("logs", job_id, "--follow").stdout == "".join(f"line{i}\n" for i in range(1, 6))
    assert sky.ok("logs", job_id).stdout.splitlines() == [f"line{i}" for i in range(1, 6)]
    assert sky.ok("logs", task_id, "--tail", "2").stdout == "line4\nline5\n"
    assert sky.ok("logs", task_id, "--tail", "1", "--follow").stdout == "line5\n"
    missing = sky("logs", task_id, "--attempt", "2")
    assert missing.returncode == 1 and "no attempt 2" in missing.stderr and "1 attempt" in missing.stderr
    two = tmp_path / "two.yaml"
    two.write_text("name: a\nrun: 'true'\n---\nname: b\nrun: 'true'\n")
    pipeline = sky.ok("launch", "--detach", str(two)).stdout.split()[0]
    several = sky("logs", pipeline)
    assert several.returncode == 1 and "has 2 tasks" in several.stderr and "(a)" in several.stderr, several.stderr
