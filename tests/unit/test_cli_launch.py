"""sky launch / queue / cancel: argument parsing, job building, plan and formatting (no sockets)."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from styx.common.timeutil import to_timestamp
from styx.v1 import common_pb2, scheduler_pb2
from styx_cli import output, plan
from styx_cli.errors import EXIT_USAGE, CliError
from styx_cli.main import build_parser, main

DIAMOND = """\
name: diamond
---
name: a
run: echo a
---
name: b
depends_on: [a]
priority: 5
run: echo b
---
name: c
depends_on: [a]
priority: 10
run: echo c
---
name: d
depends_on: [b, c]
run: echo d
---
name: e
depends_on: a
priority: -1
run: echo e
"""


def parse(*argv: str):
    return build_parser().parse_args(["launch", *argv])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- parsing


def test_file_then_overrides() -> None:
    args = parse("task.yaml", "--cpus", "2+", "--env", "A=1", "--env", "B", "-d", "--use-spot", "--retries", "3")
    assert args.entrypoint == ["task.yaml"] and plan.is_task_file(args.entrypoint)
    assert (args.cpus, args.env, args.detach, args.use_spot, args.retries) == ("2+", ["A=1", "B"], True, True, 3)
    assert parse("t.yml", "--no-use-spot").use_spot is False
    assert parse("t.yml").use_spot is None and parse("t.yml").priority is None


def test_inline_command_after_double_dash() -> None:
    args = parse("--gpus", "A100:8", "--", "python", "train.py", "--cpus", "3")
    assert args.entrypoint == ["python", "train.py", "--cpus", "3"] and args.cpus is None
    assert not plan.is_task_file(args.entrypoint)
    assert not plan.is_task_file(["echo", "x.yaml"])


def test_queue_and_status_flags() -> None:
    parser = build_parser()
    q = parser.parse_args(["queue", "j-1", "--json"])
    assert (q.job, q.json, q.all) == ("j-1", True, False)
    assert parser.parse_args(["queue", "-a"]).all
    st = parser.parse_args(["status"])
    assert (st.limit, st.all) == (200, False)


def test_cancel_rejects_ids_that_are_neither_jobs_nor_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cancel", "j-1", "x-2"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'x-2'" in err and "j-" in err and err.count("\n") == 1


# ---------------------------------------------------------------- building the job


def test_build_job_from_yaml_with_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_SHELL", "yes")
    path = write(tmp_path, "dag.yaml", DIAMOND)
    job = plan.build_job(
        parse(
            str(path),
            "--cpus",
            "2",
            "--memory",
            "4+",
            "--gpus",
            "A100:8,H100:8",
            "--env",
            "K=V",
            "--env",
            "FROM_SHELL",
            "--priority",
            "7",
            "--retries",
            "2",
            "--infra",
            "local",
            "--use-spot",
        )
    )
    assert job.name == "diamond" and job.source == str(path) and job.workdir is None
    specs = [t.spec for t in job.tasks]
    assert [s.name for s in specs] == ["a", "b", "c", "d", "e"]
    for s in specs:
        res = s.resources
        assert (res.cpus, res.cpus_at_least, res.memory_gib, res.memory_at_least) == (2, False, 4, True)
        assert [f"{a.name}:{a.count}" for a in res.accelerators] == ["A100:8", "H100:8"]
        assert res.infra == "local" and res.use_spot
        assert s.envs == {"K": "V", "FROM_SHELL": "yes"} and s.priority == 7 and s.retry.max_retries == 2
    assert specs[3].depends_on == ("b", "c")


def test_inline_job_and_name(tmp_path: Path) -> None:
    job = plan.build_job(parse("--name", "hello", "--", "echo", "a b"))
    assert job.name == "hello" and len(job.tasks) == 1
    assert job.tasks[0].spec.name == "hello" and job.tasks[0].spec.run == "echo 'a b'"
    assert job.source == "command line"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ((), "task YAML file or a command"),
        (("missing.yaml",), "no such task file"),
        (("--cpus", "abc", "--", "echo"), "--cpus"),
        (("--gpus", "A100:x", "--", "echo"), "--gpus"),
        (("--env", "=x", "--", "echo"), "--env"),
        (("--retries", "-1", "--", "echo"), "--retries"),
        (("--infra", "a/b/c/d", "--", "echo"), "infra"),
    ],
)
def test_bad_command_lines_are_usage_errors(argv: tuple[str, ...], needle: str) -> None:
    with pytest.raises(CliError) as info:
        plan.build_job(parse(*argv))
    assert info.value.exit_code == EXIT_USAGE and needle in info.value.message
    assert "\n" not in info.value.message


def test_cycle_is_refused_with_the_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cycle.yaml",
        "name: a\ndepends_on: c\nrun: x\n---\nname: b\ndepends_on: a\nrun: x\n---\nname: c\ndepends_on: b\nrun: x\n",
    )
    with pytest.raises(CliError) as info:
        plan.build_job(parse(str(path)))
    message = info.value.message
    assert info.value.exit_code == EXIT_USAGE and message.startswith(f"{path}: ")
    assert "dependency cycle a -> c -> b -> a" in message and "\n" not in message


def test_unknown_dependency_and_misspelt_key(tmp_path: Path) -> None:
    path = write(tmp_path, "dep.yaml", "name: a\nrun: x\n---\nname: b\ndepends_on: z\nrun: x\n")
    with pytest.raises(CliError, match="no task named 'z'"):
        plan.build_job(parse(str(path)))
    typo = write(tmp_path, "typo.yaml", "resources: {cpu: 2}\nrun: x\n")
    with pytest.raises(CliError, match=r"resources\.cpu: unknown key; allowed here: cpus") as info:
        plan.build_job(parse(str(typo)))
    assert info.value.exit_code == EXIT_USAGE


def test_workdir_is_relative_to_the_file_and_one_per_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proj" / "src").mkdir(parents=True)
    path = write(tmp_path / "proj", "t.yaml", "workdir: src\nrun: ls\n")
    monkeypatch.chdir(tmp_path)
    assert plan.build_job(parse("proj/t.yaml")).workdir == (tmp_path / "proj" / "src").resolve()
    assert plan.build_job(parse(str(path), "--workdir", ".")).workdir == tmp_path.resolve()
    two = write(tmp_path, "two.yaml", "name: a\nworkdir: x\nrun: ls\n---\nname: b\nworkdir: y\nrun: ls\n")
    with pytest.raises(CliError, match="different workdirs"):
        plan.build_job(parse(str(two)))


def test_pack_workdir_errors_are_short_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(CliError) as missing:
        plan.pack_workdir(tmp_path / "nope")
    assert missing.value.exit_code == EXIT_USAGE and "not a directory" in missing.value.message
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 4096)
    with pytest.raises(CliError) as big:
        plan.pack_workdir(tmp_path, max_bytes=1024)
    assert big.value.exit_code == EXIT_USAGE and ".styxignore" in big.value.message
    assert big.value.message.count("\n") <= 1
    (tmp_path / ".styxignore").write_text("big.bin\n")
    assert plan.pack_workdir(tmp_path, max_bytes=1024)


def test_task_to_pb_carries_retry_deps_and_alternatives(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "alt.yaml",
        "name: a\nrun: x\n---\nname: b\nretry: {max_retries: 2, backoff: 3}\n"
        "timeout: 10m\nresources: {any_of: [{cpus: 4}, {accelerators: T4:1}]}\n"
        "run: y\n",
    )
    job = plan.build_job(parse(str(path)))
    msg = plan.task_to_pb(job.tasks[1])
    assert list(msg.depends_on) == ["a"] and msg.retry.max_retries == 2 and msg.retry.backoff_s == 3
    assert msg.timeout_s == 600
    if "any_of" in msg.resources.DESCRIPTOR.fields_by_name:
        assert msg.resources.any_of[0].cpus == 4
        assert msg.resources.any_of[1].accelerators[0].name == "T4"


def test_arch_reaches_the_request_and_the_plan(tmp_path: Path) -> None:
    path = write(tmp_path, "arch.yaml", "run: x\nresources: {cpus: 64+, arch: aarch64}\n")
    job = plan.build_job(parse(str(path)))
    assert plan.task_to_pb(job.tasks[0]).resources.arch == "arm64"
    assert plan.plan_rows(job)[0][5] == "cpus=64+ arch=arm64"
    job = plan.build_job(parse(str(path), "--arch", "x86_64"))
    assert plan.task_to_pb(job.tasks[0]).resources.arch == "x86_64"
    with pytest.raises(CliError, match="--arch: 'ppc' is not an architecture") as err:
        plan.build_job(parse(str(path), "--arch", "ppc"))
    assert err.value.exit_code == EXIT_USAGE


# ---------------------------------------------------------------- plan


def test_dependency_order_respects_edges_then_priority(tmp_path: Path) -> None:
    job = plan.build_job(parse(str(write(tmp_path, "dag.yaml", DIAMOND))))
    order = [s.name for s in plan.dependency_order([t.spec for t in job.tasks])]
    assert order == ["a", "c", "b", "d", "e"]  # c (10) before b (5); d once both are placed; e (-1) last


def test_plan_rows_and_resources_text(tmp_path: Path) -> None:
    job = plan.build_job(parse(str(write(tmp_path, "dag.yaml", DIAMOND)), "--memory", "8+", "--retries", "1"))
    rows = plan.plan_rows(job)
    assert [r[1] for r in rows] == ["a", "c", "b", "d", "e"]
    assert rows[3][:5] == ["4", "d", "b, c", "0", "1 (backoff 1s)"]
    assert rows[0][5] == "cpus=0.5 mem=8+GiB"  # the scheduler's default CPUs, as it will store them


def test_offer_lines() -> None:
    broker_pb2 = pytest.importorskip("styx.v1.broker_pb2")
    if not hasattr(broker_pb2, "OptimizeResponse"):
        pytest.skip("the broker contract has no Optimize yet")
    from styx_cli.launch import offer_lines

    offer = common_pb2.Offer(
        provider="aws",
        region="us-east-1",
        zone="us-east-1a",
        instance_type="p4d.24xlarge",
        cpus=96,
        memory_gib=1152,
        accelerator_name="A100",
        accelerator_count=8,
    )
    answer = broker_pb2.OptimizeResponse(
        offers=[
            broker_pb2.RankedOffer(offer=offer, hourly_price=32.77, total_hourly_price=32.77),
            broker_pb2.RankedOffer(offer=offer, hourly_price=12.5, total_hourly_price=12.5, spot=True),
        ]
    )
    lines = offer_lines("train", 5, answer)
    assert lines[0] == "  train  chosen: aws/us-east-1/us-east-1a p4d.24xlarge (96 vCPU, 1152 GiB A100:8) $32.77/h"
    assert lines[1].endswith("$12.50/h spot") and "runner-up" in lines[1]
    none = broker_pb2.OptimizeResponse(rejections=[broker_pb2.Rejection(family="gcp", reason="no credentials")])
    assert offer_lines("x", 1, none) == ["  x  no offer fits: gcp: no credentials"]


def test_dryrun_shows_offers_the_launch_skips_now() -> None:
    from styx.v1 import broker_pb2
    from styx_cli.launch import task_offer_lines

    offer = common_pb2.Offer(provider="aws", region="us-east-1", zone="us-east-1b", instance_type="m6i.large", cpus=2)
    skipped = broker_pb2.Rejection(
        family="aws/us-east-1/us-east-1a m6i.large",
        reason="skipped now: cooling down after a failure (spot instance reclaimed: i-1 vanished)",
    )
    live = broker_pb2.OptimizeResponse(
        offers=[broker_pb2.RankedOffer(offer=offer, hourly_price=0.035, spot=True, provider_enabled=True)],
        rejections=[
            skipped,
            broker_pb2.Rejection(family="aws p4d", reason="has GPUs"),
            *(
                broker_pb2.Rejection(family=f"aws i{n}", reason="skipped by default: storage-optimized family")
                for n in range(5)
            ),
        ],
    )
    lines = task_offer_lines("t", 1, live, live)
    assert lines[0].startswith("  t  chosen: aws/us-east-1/us-east-1b m6i.large")
    assert lines[1:] == [
        "     skipped now: aws/us-east-1/us-east-1a m6i.large: cooling down after a failure "
        "(spot instance reclaimed: i-1 vanished)",
        "     skipped by default: aws i0: storage-optimized family",
        "     skipped by default: aws i1: storage-optimized family",
        "     skipped by default: aws i2: storage-optimized family",
        "     ... and 2 more cheaper families skipped by default",
    ]


# ---------------------------------------------------------------- streaming


def test_prefix_writer_keeps_lines_whole() -> None:
    from styx_cli.launch import PrefixWriter

    out = io.BytesIO()
    lock = threading.Lock()
    a, b = PrefixWriter(out, "(a) ", lock), PrefixWriter(out, "(b) ", lock)
    a.write(b"one\ntw")
    b.write(b"x\n")
    a.write(b"o\nthree")
    a.close()
    b.close()
    assert out.getvalue() == b"(a) one\n(b) x\n(a) two\n(a) three\n"
    raw = io.BytesIO()
    PrefixWriter(raw, "", lock).write(b"50%\r")
    assert raw.getvalue() == b"50%\r"


def make_task(name: str, state: int, **kw) -> common_pb2.Task:
    now = time.time()
    task = common_pb2.Task(
        task_id=f"t-{name}",
        job_id="j-1",
        job_name="dag",
        state=state,
        spec=common_pb2.TaskSpec(name=name, run=f"echo {name}"),
        **kw,
    )
    task.created_at.CopyFrom(to_timestamp(now - 60))
    if kw.get("attempt"):
        task.started_at.CopyFrom(to_timestamp(now - 30))
        task.finished_at.CopyFrom(to_timestamp(now - 20))
    return task


def make_job(*tasks: common_pb2.Task, state: int = scheduler_pb2.JOB_STATE_FAILED) -> scheduler_pb2.Job:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[output.state_name(t.state)] = counts.get(output.state_name(t.state), 0) + 1
    job = scheduler_pb2.Job(job_id="j-1", name="dag", state=state, task_counts=counts, tasks=tasks)
    job.created_at.CopyFrom(to_timestamp(time.time() - 60))
    return job


def test_launch_exit_code() -> None:
    from styx_cli.launch import launch_exit_code

    ok = make_task("a", common_pb2.TASK_STATE_SUCCEEDED, attempt=1, exit_code=0, has_exit_code=True)
    bad = make_task("b", common_pb2.TASK_STATE_FAILED, attempt=1, exit_code=3, has_exit_code=True)
    assert launch_exit_code(make_job(ok, state=scheduler_pb2.JOB_STATE_SUCCEEDED)) == 0
    assert launch_exit_code(make_job(bad)) == 3
    assert launch_exit_code(make_job(ok, bad)) == 1


# ---------------------------------------------------------------- formatting


def sample_job() -> scheduler_pb2.Job:
    return make_job(
        make_task("a", common_pb2.TASK_STATE_SUCCEEDED, attempt=2, exit_code=0, has_exit_code=True, node_id="n-1"),
        make_task(
            "c",
            common_pb2.TASK_STATE_FAILED,
            attempt=1,
            exit_code=7,
            has_exit_code=True,
            failure_reason="run exited with 7 " + "x" * 200,
        ),
        make_task("d", common_pb2.TASK_STATE_SKIPPED, failure_reason="upstream task 'c' ended FAILED"),
    )


def test_job_to_dict_and_rows() -> None:
    job = output.job_to_dict(sample_job())
    assert (job["state"], job["tasks_total"]) == ("FAILED", 3)
    assert [t["name"] for t in job["tasks"]] == ["a", "c", "d"]
    now = job["_created"] + 60
    assert output.job_row(job, now) == ["j-1", "dag", "FAILED", "3", "1 SUCCEEDED, 1 FAILED, 1 SKIPPED", "1m00s"]
    a, c, d = (output.job_task_row(t, now) for t in job["tasks"])
    assert a[:6] == ["t-a", "a", "SUCCEEDED", "2", "n-1", "0"] and a[7] == "10s"
    assert len(c[-1]) == 70 and c[-1].endswith("…")
    assert d[3:8] == ["-", "-", "-", "-", "-"] and d[-1] == "upstream task 'c' ended FAILED"


def test_print_job_and_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    job = output.job_to_dict(sample_job())
    output.print_job(job, as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["tasks"][0]["attempt"] == 2 and "_created" not in data and "_started" not in data["tasks"][0]
    output.print_job(job, as_json=False)
    out = capsys.readouterr().out
    assert out.startswith("job j-1 dag: FAILED, 3 task(s)") and "ATTEMPT" in out and "SKIPPED" in out
    listed = output.job_to_dict(
        scheduler_pb2.Job(job_id="j-2", name="x", state=scheduler_pb2.JOB_STATE_RUNNING, task_counts={"RUNNING": 1})
    )
    assert "tasks" not in listed
    output.print_jobs([listed], as_json=False)
    assert "j-2" in capsys.readouterr().out
    output.print_jobs([listed], as_json=True)
    assert json.loads(capsys.readouterr().out)[0]["state"] == "RUNNING"


def test_job_summary_lines() -> None:
    lines = output.job_summary_lines(output.job_to_dict(sample_job()), io.StringIO())
    assert lines[0] == "job j-1 (dag): FAILED; 1 SUCCEEDED, 1 FAILED, 1 SKIPPED"
    assert lines[1].split()[:6] == ["a", "SUCCEEDED", "exit", "0", "10s", "attempt"]
    assert "exit 7" in lines[2] and "run exited with 7" in lines[2]
    assert "SKIPPED" in lines[3] and "'c'" in lines[3] and "exit" not in lines[3]


def test_status_groups_tasks_by_job(capsys: pytest.CaptureFixture[str]) -> None:
    newest_first = [output.task_to_dict(t) for t in reversed(sample_job().tasks)]
    other = output.task_to_dict(make_task("z", common_pb2.TASK_STATE_RUNNING, attempt=1))
    other["job_id"], other["job_name"] = "j-0", "older"
    groups = output.group_by_job([*newest_first, other])
    assert [(h["job_id"], h["state"]) for h, _ in groups] == [("j-1", "FAILED"), ("j-0", "RUNNING")]
    assert [t["name"] for t in groups[0][1]] == ["a", "c", "d"]  # submission order inside a job
    output.print_tasks([*newest_first, other], as_json=False)
    rows = capsys.readouterr().out.splitlines()
    job_line = next(i for i, ln in enumerate(rows) if ln.startswith("j-1 "))
    assert "dag" in rows[job_line] and "FAILED" in rows[job_line]
    assert rows[job_line + 1].strip().startswith("t-a")


@pytest.mark.parametrize(
    ("counts", "state"),
    [
        ({"SUCCEEDED": 2}, "SUCCEEDED"),
        ({"SUCCEEDED": 1, "SKIPPED": 1}, "FAILED"),
        ({"CANCELLED": 1, "SUCCEEDED": 1}, "CANCELLED"),
        ({"PENDING": 2}, "PENDING"),
        ({"PENDING": 1, "SUCCEEDED": 1}, "RUNNING"),
    ],
)
def test_aggregate_state(counts: dict[str, int], state: str) -> None:
    assert output.aggregate_state(counts) == state


def test_stats_per_priority_rows() -> None:
    stats = scheduler_pb2.Stats(
        tasks_by_state={"SUCCEEDED": 3},
        jobs_total=1,
        throughput_per_s=2.5,
        by_priority=[
            scheduler_pb2.PriorityStats(
                priority=10, tasks_by_state={"SUCCEEDED": 2}, queue_wait_p50_s=0.5, queue_wait_p99_s=1.5
            )
        ],
    )
    data = output.stats_to_dict(stats)
    assert data["by_priority"][0]["priority"] == 10 and data["by_priority"][0]["tasks_total"] == 2
    rows = output.stats_rows(data)
    assert ["throughput (last minute)", "2.50 tasks/s"] in rows
    prio = next(r for r in rows if r[0] == "priority 10")
    assert "2 SUCCEEDED" in prio[1] and "0.5s / 1.5s" in prio[1]


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"\xff\xfe\x00garbage\x80" * 50, "not a UTF-8 text file"), (b"[" * 10_000, "nested too deeply")],
)
def test_garbage_task_files_give_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert main(["launch", "--dryrun", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert needle in err and "unexpected" not in err and len(err.strip().splitlines()) == 1


def test_sky_api_proto_writes_the_shipped_contract(tmp_path: Path) -> None:
    assert main(["api", "proto", str(tmp_path / "out")]) == 0
    written = {p.name: p.read_text() for p in (tmp_path / "out" / "styx" / "v1").glob("*.proto")}
    repo = Path(__file__).resolve().parents[2] / "proto" / "styx" / "v1"
    assert written == {p.name: p.read_text() for p in repo.glob("*.proto")}
    assert 'option go_package = "' in written["scheduler.proto"]
