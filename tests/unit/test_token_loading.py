"""Tokens are trimmed wherever they are read, and never echoed in errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from styx.common import config


def test_a_token_file_with_a_trailing_newline_is_trimmed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret-token\r\n")
    monkeypatch.delenv("STYX_TOKEN", raising=False)
    monkeypatch.setenv("STYX_TOKEN_FILE", str(path))
    assert config.load_token() == "s3cret-token"
    monkeypatch.setenv("STYX_TOKEN", " s3cret-token\n")
    assert config.load_token() == "s3cret-token"


def test_an_unreadable_token_file_is_named_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"\xffs3cret-token")
    monkeypatch.delenv("STYX_TOKEN", raising=False)
    monkeypatch.setenv("STYX_TOKEN_FILE", str(path))
    with pytest.raises(SystemExit) as err:
        config.load_token()
    assert str(path) in str(err.value) and "s3cret" not in str(err.value)


def test_a_token_on_stdin_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STYX_TOKEN", raising=False)
    monkeypatch.setenv(config.TOKEN_STDIN_ENV, "1")
    monkeypatch.setattr(config, "_stdin_token", None)
    monkeypatch.setattr("sys.stdin", io.StringIO("styx-node.n1.1.abc\n"))
    assert config.load_token() == "styx-node.n1.1.abc"
    assert config.load_token() == "styx-node.n1.1.abc"  # stdin is not read again
