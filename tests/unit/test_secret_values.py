"""Task secrets below the CLI: the key, sealing in the scheduler's store, redaction in
responses and validation messages, opening for the agent, and the task file's rules."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from helpers import InProcessBroker
from styx.broker.core import Broker
from styx.common.errors import InvalidArgument
from styx.common.resources import Capacity
from styx.common.secretbox import REDACTED, SecretBox, SecretKeyError, SecretOpenError
from styx.common.validation import validate
from styx.scheduler import convert
from styx.scheduler.core import Scheduler
from styx.scheduler.model import TaskSpec
from styx.scheduler.workqueue import Assign
from styx.taskfile import apply_overrides, parse
from styx.v1 import common_pb2, scheduler_pb2

VALUE = "s3cret-value-1f2e3d"


def test_the_key_file_is_created_private_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STYX_SECRET_KEY", raising=False)
    path = tmp_path / "local" / "secret.key"
    sealed = SecretBox.from_env_or_file(path).seal({"K": VALUE})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert SecretBox.from_env_or_file(path).open(sealed) == {"K": VALUE}
    assert VALUE not in sealed["K"]


def test_the_env_key_wins_and_a_bad_or_other_key_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("STYX_SECRET_KEY", key)
    box = SecretBox.from_env_or_file(tmp_path / "unused.key")
    assert not (tmp_path / "unused.key").exists()
    sealed = box.seal({"K": VALUE})
    assert SecretBox(key.encode()).open(sealed) == {"K": VALUE}
    with pytest.raises(SecretOpenError, match=r"key .* changed"):
        SecretBox(Fernet.generate_key()).open(sealed)
    monkeypatch.setenv("STYX_SECRET_KEY", "not-a-key")
    with pytest.raises(SecretKeyError, match="not a Fernet key"):
        SecretBox.from_env_or_file()


@pytest.fixture
def sched(engine_factory):
    broker = Broker(engine_factory("broker"), None)
    scheduler = Scheduler(
        engine_factory("scheduler"), InProcessBroker(broker), secrets=SecretBox(Fernet.generate_key())
    )
    broker.register_node("n1", "local", "pid-1", Capacity(4, 8, []))
    return scheduler


def test_secrets_are_sealed_in_the_store_redacted_out_and_opened_for_the_agent(sched, tmp_path: Path) -> None:
    spec = TaskSpec(name="t", run="true", envs={"E": "plain"}, secrets={"API_KEY": VALUE})
    _, tasks = sched.submit_job("r1", "", [spec])
    sched.dispatch_once()
    rec = sched.get_task(tasks[0].task_id)
    assert rec.spec.secrets["API_KEY"] != VALUE
    with sched._engine.connect() as conn:
        stored = conn.execute(text("SELECT spec_json FROM sched_tasks")).scalar_one()
    assert "API_KEY" in stored and VALUE not in stored
    assert dict(convert.task_to_pb(rec).spec.secrets) == {"API_KEY": REDACTED}
    work = sched.outstanding_work("n1")
    assert isinstance(work[0], Assign)
    assert VALUE not in str(convert.work_item_to_pb(work[0]))
    message = convert.work_item_to_pb(sched.reveal("n1", work[0]))
    assert dict(message.assign.spec.secrets) == {"API_KEY": VALUE}
    assert dict(message.assign.spec.envs) == {"E": "plain"}


def test_secrets_sealed_with_another_key_fail_the_attempt_with_the_reason(sched, engine_factory) -> None:
    _, tasks = sched.submit_job("r1", "", [TaskSpec(name="t", run="true", secrets={"API_KEY": VALUE})])
    sched.dispatch_once()
    work = sched.outstanding_work("n1")
    other = Scheduler(sched._engine, None, secrets=SecretBox(Fernet.generate_key()))
    assert other.reveal("n1", work[0]) is None
    rec = other.get_task(tasks[0].task_id)
    assert rec.state == "FAILED" and "secret key" in rec.failure_reason and VALUE not in rec.failure_reason


def test_a_bad_secret_value_is_named_but_never_quoted() -> None:
    spec = common_pb2.TaskSpec(name="t", run="true", secrets={"K": VALUE + "\x00"}, envs={"E": "x\x00"})
    with pytest.raises(InvalidArgument) as err:
        validate(scheduler_pb2.SubmitJobRequest(request_id="r", job=scheduler_pb2.JobSpec(tasks=[spec])))
    assert "secrets" in err.value.message and REDACTED in err.value.message
    assert VALUE not in err.value.message and VALUE not in str(err.value.violations)


def test_a_key_without_value_must_come_from_the_command_line() -> None:
    job = parse("envs: {HF_TOKEN: , KEEP: ''}\nsecrets: {API_KEY: }\nrun: 'true'\n", source="t.yaml")
    assert job.tasks[0].spec.envs == {"KEEP": ""}
    with pytest.raises(
        InvalidArgument, match=r"t\.yaml: envs\.HF_TOKEN: environment variable HF_TOKEN has no value; give it with"
    ):
        apply_overrides(job, secrets={"API_KEY": "v"})
    with pytest.raises(InvalidArgument, match=r"secrets\.API_KEY: secret API_KEY has no value; give it with --secret"):
        apply_overrides(job, envs={"HF_TOKEN": "v"})
    given = apply_overrides(job, envs={"HF_TOKEN": "v"}, secrets={"API_KEY": "s"}).tasks[0].spec
    assert (given.envs, given.secrets) == ({"KEEP": "", "HF_TOKEN": "v"}, {"API_KEY": "s"})


def test_dotenv_files(tmp_path: Path) -> None:
    from styx_cli.errors import CliError
    from styx_cli.spec import parse_env_file, parse_envs

    path = tmp_path / ".env"
    path.write_text('# c\n\nA=1\nexport B = two words # note\nC=\'a # b\'\nD="x\\"y\\nz"\nE=\n')
    assert parse_env_file(str(path)) == {"A": "1", "B": "two words", "C": "a # b", "D": 'x"y\nz', "E": ""}
    assert parse_envs(["A=flag"], env_files=[str(path)])["A"] == "flag"
    path.write_text("9X=1\n")
    with pytest.raises(CliError, match="line 1: '9X' is not a valid environment variable name"):
        parse_env_file(str(path))
    with pytest.raises(CliError, match="cannot read"):
        parse_env_file(str(tmp_path / "missing.env"))


def test_the_schedulers_request_digests_are_keyed(engine_factory) -> None:
    """A SubmitJob's digest covers its secrets: a plain SHA-256 of the request would let
    anyone holding the store check guesses of a secret offline; an HMAC does not."""
    from styx.common.idempotency import RequestLog, digest
    from styx.scheduler import tables

    box = SecretBox(Fernet.generate_key())
    log = RequestLog(engine_factory("scheduler"), tables.requests, digest_key=box.derive(b"request-digest"))
    payload = b"payload with a secret"
    assert log.digest("M", payload) == log.digest("M", payload) != digest("M", payload)
    assert box.derive(b"request-digest") != SecretBox(Fernet.generate_key()).derive(b"request-digest")
