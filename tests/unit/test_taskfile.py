"""Task YAML parsing: SkyPilot-compatible fields, pipelines, and errors that name the key."""

from __future__ import annotations

import pytest

from styx.common.errors import InvalidArgument
from styx.common.resources import Accelerator
from styx.taskfile import apply_overrides, load_file, parse

TRAIN = """
name: train
resources:
  cpus: 4+
  memory: 16+
  accelerators: A100:8
  use_spot: true
  infra: aws/us-east-1
num_nodes: 1
envs: {EPOCHS: 3, DEBUG: true}
workdir: .
setup: pip install -r requirements.txt
run: python train.py --epochs $EPOCHS
retry: {max_retries: 2, backoff: 10s, exit_codes: [75]}
timeout: 2h
priority: 5
"""


def test_skypilot_task_parses() -> None:
    job = parse(TRAIN, "train.yaml")
    (entry,) = job.tasks
    spec = entry.spec
    assert job.name == "train" and spec.name == "train"
    res = spec.resources
    assert (res.cpus, res.cpus_at_least, res.memory_gib, res.memory_at_least) == (4, True, 16, True)
    assert res.accelerators == (Accelerator("A100", 8),) and res.use_spot and res.infra == "aws/us-east-1"
    assert spec.envs == {"EPOCHS": "3", "DEBUG": "true"}
    assert spec.retry.max_retries == 2 and spec.retry.backoff_s == 10 and spec.retry.exit_codes == (75,)
    assert spec.timeout_s == 7200 and spec.priority == 5 and entry.workdir == "."


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("A100:8", (Accelerator("A100", 8),)),
        ("{A100: 8}", (Accelerator("A100", 8),)),
        ("[A100:8, H100:4]", (Accelerator("A100", 8), Accelerator("H100", 4))),
        ("{A100: 8, H100: 4}", (Accelerator("A100", 8), Accelerator("H100", 4))),
        ("T4", (Accelerator("T4", 1),)),
    ],
)
def test_accelerator_forms(value: str, expected: tuple[Accelerator, ...]) -> None:
    job = parse(f"run: x\nresources:\n  accelerators: {value}\n")
    assert job.tasks[0].spec.resources.accelerators == expected


def test_legacy_cloud_region_zone_become_infra() -> None:
    job = parse("run: x\nresources: {cloud: gcp, region: us-central1, zone: us-central1-a}\n")
    assert job.tasks[0].spec.resources.infra == "gcp/us-central1/us-central1-a"


def test_pipeline_chains_tasks_and_names_the_job() -> None:
    text = """
name: pipe
---
name: prep
run: echo prep
---
name: train
run: echo train
---
name: eval
run: echo eval
depends_on: [prep]
"""
    job = parse(text, "pipe.yaml")
    assert job.name == "pipe"
    deps = {e.spec.name: e.spec.depends_on for e in job.tasks}
    assert deps == {"prep": (), "train": ("prep",), "eval": ("prep",)}


def test_any_of_and_ordered_alternatives() -> None:
    job = parse(
        "run: x\nresources:\n  any_of:\n    - {accelerators: H100:1}\n    - {accelerators: A100:1, infra: gcp}\n"
    )
    (entry,) = job.tasks
    assert [c.resources.accelerators[0].name for c in entry.any_of] == ["H100", "A100"]
    assert entry.any_of[1].resources.infra == "gcp"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run: x\nresources: {cpu: 4}\n", "f.yaml: resources.cpu: unknown key; allowed here: cpus, memory"),
        ("run: x\nresources: {cpus: four}\n", "f.yaml: resources.cpus: 'four' is not a number"),
        ("run: x\nfile_mounts: {}\n", "f.yaml: file_mounts: unknown key"),
        ("setup: x\n", "f.yaml: run: required"),
        ("run: [a]\n", "f.yaml: run: must be a string"),
        ("run: x\nresources: {accelerators: 'A100:0'}\n", "resources.accelerators"),
        ("run: x\nresources: {use_spot: maybe}\n", "resources.use_spot: must be true or false"),
        ("run: x\nresources: {arch: sparc}\n", "f.yaml: resources.arch: 'sparc' is not an architecture; use x86_64"),
        ("run: x\nresources: {arch: 64}\n", "resources.arch: must be x86_64 or arm64, got 64"),
        ("run: x\nresources: {infra: 'aws//x'}\n", "resources.infra"),
        ("run: x\nresources: {infra: aws, cloud: aws}\n", "give either infra or cloud"),
        ("run: x\nnum_nodes: 65\n", "num_nodes: must be 1-64, got 65"),
        ("run: x\nnum_nodes: 0\n", "num_nodes: must be 1-64, got 0"),
        ("run: x\nenvs: {1A: b}\n", "envs.1A: not a valid environment variable name"),
        ("run: x\ntimeout: soon\n", "timeout: 'soon' is not a duration"),
        ("run: x\nretry: {tries: 3}\n", "retry.tries: unknown key"),
        ("run: x\nresources:\n  any_of:\n    - {gpus: A100}\n", "resources.any_of[0].gpus: unknown key"),
        ("run: [unclosed\n", "not valid YAML at line"),
        ("", "holds no task"),
    ],
)
def test_errors_name_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse(text, "f.yaml")
    assert message in err.value.message


def test_overrides_apply_to_every_task(tmp_path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("run: x\nresources: {cpus: 2, accelerators: T4}\nenvs: {A: '1'}\n")
    job = apply_overrides(load_file(path), cpus="8+", gpus="A100:2", use_spot=True, envs={"B": "2"}, name="n")
    spec = job.tasks[0].spec
    assert (spec.name, spec.resources.cpus, spec.resources.cpus_at_least) == ("n", 8, True)
    assert spec.resources.accelerators == (Accelerator("A100", 2),) and spec.resources.use_spot
    assert spec.envs == {"A": "1", "B": "2"}


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read"):
        load_file(tmp_path / "nope.yaml")


def test_arch_is_a_resource_key_with_an_alias_and_an_override(tmp_path) -> None:
    job = parse("run: x\nresources:\n  arch: aarch64\n  any_of:\n    - {cpus: 4}\n    - {cpus: 8, arch: x86_64}\n")
    (entry,) = job.tasks
    assert entry.spec.resources.arch == "arm64"
    assert [c.resources.arch for c in entry.any_of] == ["", "x86_64"]
    assert parse("run: x\n").tasks[0].spec.resources.arch == ""  # unset: the optimizer's default applies
    path = tmp_path / "t.yaml"
    path.write_text("run: x\nresources: {arch: arm64}\n")
    assert apply_overrides(load_file(path), arch="x86_64").tasks[0].spec.resources.arch == "x86_64"
    with pytest.raises(InvalidArgument, match="--arch: 'mips' is not an architecture"):
        apply_overrides(load_file(path), arch="mips")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (bytes(range(256)) * 8, "not a UTF-8 text file"),
        (b"[" * 10_000, "nested too deeply"),
        (b"run: x\n" + b"a: " + b"{b: " * 10_000 + b"}" * 10_000 + b"\n", "nested too deeply"),
    ],
)
def test_garbage_and_deep_nesting_give_a_one_line_error(tmp_path, content: bytes, needle: str) -> None:
    path = tmp_path / "task.yaml"
    path.write_bytes(content)
    with pytest.raises(InvalidArgument) as err:
        load_file(path)
    assert needle in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize("key", ["timeout: .nan", "timeout: .inf", "retry: {max_retries: 1, backoff: .nan}"])
def test_nan_and_infinite_durations_are_refused(key: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse(f"run: echo\n{key}\n")
    assert "finite" in err.value.message


def test_env_values_with_nul_are_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse('run: echo\nenvs: {A: "x\\0y"}\n')
    assert "envs.A" in err.value.message and "NUL" in err.value.message
