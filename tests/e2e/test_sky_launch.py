"""`sky launch`, `sky queue` and `sky cancel JOB` as a user types them, against a local plane.

One plane per module (own STYX_HOME, `sky local down` at teardown, from conftest's `sky`).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from helpers import SkyCli, lines, sky_command, sky_env, wait_until

# a -> {b, c} -> d, plus a fan-out e1..e4 after a; c fails, so d is SKIPPED. Each task
# prints `date +%s.%N` first, so the output gives the start order.
DAG = """\
name: diamond
---
name: a
priority: 1
run: date +%s.%N; sleep 0.3
---
name: b
depends_on: [a]
priority: 5
run: date +%s.%N; sleep 1; echo b done
---
name: c
depends_on: [a]
priority: 10
run: date +%s.%N; echo boom; exit 7
---
name: d
depends_on: [b, c]
priority: 20
run: date +%s.%N; echo d ran
""" + "".join(
    f"---\nname: e{i}\ndepends_on: a\npriority: -1\nrun: date +%s.%N; echo fan {i}\n" for i in range(1, 5)
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def job_id_of(stderr: str) -> str:
    match = re.search(r"\bj-[0-9a-f]+\b", stderr)
    assert match, stderr
    return match.group(0)


def queue_job(sky: SkyCli, job_id: str) -> dict:
    return json.loads(sky.ok("queue", job_id, "--json").stdout)


def start_times(stdout: str) -> dict[str, float]:
    """First `(name) <seconds>` line of each task."""
    out: dict[str, float] = {}
    for line in stdout.splitlines():
        match = re.match(r"^\((\w+)\) (\d+\.\d+)$", line)
        if match:
            out.setdefault(match.group(1), float(match.group(2)))
    return out


def test_dag_runs_in_order_and_skips_dependents_of_the_failed_branch(sky: SkyCli, tmp_path: Path) -> None:
    dag = write(tmp_path / "dag.yaml", DAG)
    proc = sky("launch", str(dag), timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    starts = start_times(proc.stdout)
    assert set(starts) == {"a", "b", "c", "e1", "e2", "e3", "e4"}, proc.stdout
    for name in ("b", "c", "e1", "e2", "e3", "e4"):
        assert starts["a"] < starts[name], (name, starts)
    # Output is prefixed with the task name; d never ran.
    assert "(c) boom" in proc.stdout and "(b) b done" in proc.stdout
    assert "(e3) fan 3" in proc.stdout and "d ran" not in proc.stdout
    job = queue_job(sky, job_id_of(proc.stderr))
    assert job["name"] == "diamond" and job["state"] == "FAILED"
    tasks = {t["name"]: t for t in job["tasks"]}
    assert [t["name"] for t in job["tasks"]] == ["a", "b", "c", "d", "e1", "e2", "e3", "e4"]
    assert tasks["c"]["state"] == "FAILED" and tasks["c"]["exit_code"] == 7
    assert tasks["d"]["state"] == "SKIPPED" and "'c'" in tasks["d"]["failure_reason"]
    assert tasks["d"]["started_at"] is None
    assert all(tasks[n]["state"] == "SUCCEEDED" for n in ("a", "b", "e1", "e2", "e3", "e4"))
    # One summary line per task on stderr.
    summary = [ln for ln in proc.stderr.splitlines() if re.match(r"^\s+(a|b|c|d|e\d)\s", ln)]
    assert len(summary) == 8, proc.stderr
    assert any("SKIPPED" in ln and "'c'" in ln for ln in summary)


def test_dryrun_prints_the_plan_in_dependency_order_and_submits_nothing(sky: SkyCli, tmp_path: Path) -> None:
    dag = write(tmp_path / "dag.yaml", DAG)
    before = json.loads(sky.ok("queue", "--json").stdout)
    proc = sky.ok("launch", "--dryrun", str(dag))
    rows = [ln.split()[1] for ln in proc.stdout.splitlines() if re.match(r"^\d+\s", ln)]
    assert rows[0] == "a" and rows.index("d") > max(rows.index("b"), rows.index("c")), proc.stdout
    assert sorted(rows) == ["a", "b", "c", "d", "e1", "e2", "e3", "e4"]
    # Either the broker ranked offers (the local host offer) or the plan says they will come.
    assert "chosen: local" in proc.stdout or "offers: not shown" in proc.stdout, proc.stdout
    assert json.loads(sky.ok("queue", "--json").stdout) == before


def test_cycle_is_refused_with_its_path(sky: SkyCli, tmp_path: Path) -> None:
    path = write(tmp_path / "cycle.yaml", """\
        name: a
        depends_on: c
        run: echo a
        ---
        name: b
        depends_on: a
        run: echo b
        ---
        name: c
        depends_on: b
        run: echo c
        """)
    proc = sky("launch", str(path))
    assert proc.returncode == 2, proc.stderr
    assert len(lines(proc.stderr)) == 1, proc.stderr
    assert "cycle" in proc.stderr and re.search(r"\b(\w) -> \w -> \w -> \1\b", proc.stderr), proc.stderr


def test_misspelt_key_is_refused_naming_its_path(sky: SkyCli, tmp_path: Path) -> None:
    path = write(tmp_path / "typo.yaml", """\
        resources: {cpu: 2}
        run: echo hi
        """)
    proc = sky("launch", str(path))
    assert proc.returncode == 2, proc.stderr
    assert len(lines(proc.stderr)) == 1 and "resources.cpu" in proc.stderr and "cpus" in proc.stderr


def test_workdir_travels_with_the_job_minus_ignored_files(sky: SkyCli, tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "data.txt", "hello from the workdir\n")
    (project / "big.bin").write_bytes(b"\0" * (1 << 20))
    write(project / ".styxignore", "big.bin\n")
    task = write(project / "task.yaml", """\
        workdir: .
        run: cat data.txt; ls
        """)
    proc = sky("launch", str(task))
    assert proc.returncode == 0, proc.stderr
    assert "hello from the workdir" in proc.stdout
    assert "data.txt" in proc.stdout and "big.bin" not in proc.stdout


def test_missing_workdir_is_a_usage_error(sky: SkyCli, tmp_path: Path) -> None:
    task = write(tmp_path / "nowd.yaml", "workdir: ./nope\nrun: ls\n")
    proc = sky("launch", str(task))
    assert proc.returncode == 2 and len(lines(proc.stderr)) <= 2, proc.stderr
    assert "workdir" in proc.stderr and "Traceback" not in proc.stderr


def test_env_override_reaches_the_task(sky: SkyCli, tmp_path: Path) -> None:
    task = write(tmp_path / "env.yaml", """\
        name: greet
        envs: {GREETING: hi, WHO: nobody}
        run: echo "$GREETING $WHO $EXTRA"
        """)
    proc = sky("launch", str(task), "--env", "GREETING=hello", "--env", "EXTRA", EXTRA="from-shell")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello nobody from-shell\n"


def test_inline_launch_exits_with_the_tasks_code(sky: SkyCli) -> None:
    ok = sky("launch", "--name", "inline", "--", "echo", "hi there")
    assert ok.returncode == 0 and ok.stdout == "hi there\n", ok.stderr
    bad = sky("launch", "--", "sh", "-c", "echo out; exit 3")
    assert bad.returncode == 3 and bad.stdout == "out\n", bad.stderr


def test_queue_lists_the_jobs(sky: SkyCli) -> None:
    table = sky.ok("queue").stdout
    row = next(ln for ln in table.splitlines() if " diamond " in ln)
    assert "FAILED" in row and re.search(r"\bj-[0-9a-f]+\b", row)
    jobs = json.loads(sky.ok("queue", "--json").stdout)
    diamond = next(j for j in jobs if j["name"] == "diamond")
    assert diamond["tasks_total"] == 8 and diamond["task_counts"]["SKIPPED"] == 1
    status = sky.ok("status").stdout
    assert diamond["job_id"] in status  # status groups tasks under a job line


def test_cancel_job_cancels_its_running_and_pending_tasks(sky: SkyCli, tmp_path: Path) -> None:
    task = write(tmp_path / "long.yaml", """\
        name: sleeper
        run: sleep 60
        ---
        name: after
        run: echo never
        """)
    proc = sky.ok("launch", "--detach", str(task))
    out = lines(proc.stdout)
    job_id = out[0]
    assert job_id.startswith("j-") and len(out) == 3 and all(ln.startswith("t-") for ln in out[1:]), proc.stdout
    wait_until(lambda: queue_job(sky, job_id)["tasks"][0]["state"] == "RUNNING", timeout=30, message="RUNNING")
    cancel = sky.ok("cancel", job_id)
    assert job_id in cancel.stdout and "CANCELLED" in cancel.stdout
    job = wait_until(
        lambda: (j := queue_job(sky, job_id))["state"] == "CANCELLED" and j, timeout=30, message="CANCELLED"
    )
    assert [t["state"] for t in job["tasks"]] == ["CANCELLED", "CANCELLED"]
    bad = sky("cancel", "x-123")
    assert bad.returncode == 2 and "j-" in bad.stderr


def test_retry_succeeds_on_the_second_attempt(sky: SkyCli, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    task = write(tmp_path / "retry.yaml", """\
        name: flaky
        retry: {max_retries: 1, backoff: 1}
        run: |
          if [ -f "$MARKER" ]; then echo second try; else touch "$MARKER"; echo first try; exit 1; fi
        """)
    proc = sky("launch", str(task), "--env", f"MARKER={marker}", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "second try" in proc.stdout
    job_id = job_id_of(proc.stderr)
    job = queue_job(sky, job_id)
    assert job["tasks"][0]["attempt"] == 2 and job["tasks"][0]["state"] == "SUCCEEDED"
    table = sky.ok("queue", job_id).stdout
    row = next(ln for ln in table.splitlines() if " flaky " in ln)
    assert re.search(r"SUCCEEDED\s+2\s", row), row


@pytest.mark.parametrize("flag", ["--json", None])
def test_stats_has_priorities_and_throughput(sky: SkyCli, flag: str | None) -> None:
    if flag:
        data = json.loads(sky.ok("stats", flag).stdout)
        prios = {p["priority"] for p in data["by_priority"]}
        assert {-1, 10} <= prios and "throughput_per_s" in data
    else:
        out = sky.ok("stats").stdout
        assert "priority 10" in out and "throughput" in out


def test_ctrl_c_detaches_and_the_job_keeps_running(sky: SkyCli, tmp_path: Path) -> None:
    task = write(tmp_path / "two.yaml", """\
        name: slow
        run: echo started; sleep 30
        ---
        name: later
        run: echo later
        """)
    proc = subprocess.Popen(
        [*sky_command(), "launch", str(task)],
        env=sky_env(sky.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "(slow) started\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "sky cancel" in err and "Traceback" not in err and "cannot stream" not in err
    job_id = job_id_of(err)
    assert queue_job(sky, job_id)["tasks"][0]["state"] == "RUNNING"
    sky.ok("cancel", job_id)
    wait_until(lambda: queue_job(sky, job_id)["state"] == "CANCELLED", timeout=30, message="CANCELLED")


def test_queue_of_a_job_past_the_get_job_cap_says_so_and_all_pages_every_task(sky: SkyCli, tmp_path: Path) -> None:
    docs = ["name: big-pipeline"] + [f'name: s{i}\nrun: "true"' for i in range(1100)]
    task = tmp_path / "big.yaml"
    task.write_text("\n---\n".join(docs) + "\n")
    proc = sky.ok("launch", "--detach", str(task))
    job_id = lines(proc.stdout)[0]
    capped = sky.ok("queue", job_id)
    assert "showing the first 1000 of 1100 tasks; --all shows every one" in capped.stderr
    every = json.loads(sky.ok("queue", "--all", "--json", job_id).stdout)
    assert [t["name"] for t in every["tasks"]] == [f"s{i}" for i in range(1100)]
    sky.ok("cancel", job_id)
