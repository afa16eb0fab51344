"""Which control plane the CLI talks to: env, config file, or the local plane."""

from __future__ import annotations

from pathlib import Path

import pytest

from styx_cli.config import remote_target
from styx_cli.errors import EXIT_USAGE, CliError


def test_no_endpoint_means_local(tmp_path: Path) -> None:
    assert remote_target({}, tmp_path) is None


def test_env_endpoint_and_token(tmp_path: Path) -> None:
    target = remote_target(
        {"STYX_ENDPOINT": "sched:1", "STYX_BROKER_ENDPOINT": "b:2", "STYX_TOKEN": "s3cret"}, tmp_path
    )
    assert target is not None
    assert (target.scheduler, target.broker, target.provisioner, target.token, target.local) == (
        "sched:1",
        "b:2",
        "",
        "s3cret",
        False,
    )
    assert "s3cret" not in repr(target)


def test_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("endpoint: h:50051\ntoken: abc\nprovisioner_endpoint: p:3\n")
    target = remote_target({}, tmp_path)
    assert target is not None and (target.scheduler, target.token, target.provisioner) == ("h:50051", "abc", "p:3")
    # The environment wins over the file.
    target = remote_target({"STYX_ENDPOINT": "e:1", "STYX_TOKEN": "t"}, tmp_path)
    assert target is not None and (target.scheduler, target.token) == ("e:1", "t")


def test_token_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file\n")
    target = remote_target({"STYX_ENDPOINT": "e:1", "STYX_TOKEN_FILE": str(tmp_path / "tok")}, tmp_path)
    assert target is not None and target.token == "from-file"
    with pytest.raises(CliError) as err:
        remote_target({"STYX_ENDPOINT": "e:1", "STYX_TOKEN_FILE": str(tmp_path / "missing")}, tmp_path)
    assert err.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("text", ["endpoint: [unclosed", "- a list", "endpont: typo:1"])
def test_bad_config_file_is_a_usage_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(CliError) as err:
        remote_target({}, tmp_path)
    assert err.value.exit_code == EXIT_USAGE and "config.yaml" in err.value.message
