"""Workdir packing honours .gitignore/.styxignore and limits; unpacking never escapes."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from styx.common.errors import InvalidArgument
from styx.workdir import pack, unpack


def _tree(root: Path) -> None:
    (root / "src").mkdir(parents=True)
    (root / "src" / "train.py").write_text("print('hi')\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"x" * 1000)
    (root / "cache.pyc").write_text("junk")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (root / ".gitignore").write_text("*.pyc\n")
    (root / ".styxignore").write_text("data/\n")


def test_pack_honours_ignore_files_and_roundtrips(tmp_path: Path) -> None:
    _tree(tmp_path / "w")
    data = pack(tmp_path / "w")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = sorted(tar.getnames())
    assert names == [".gitignore", ".styxignore", "src/train.py"]
    unpack(data, tmp_path / "out")
    assert (tmp_path / "out" / "src" / "train.py").read_text() == "print('hi')\n"


def test_pack_refuses_an_oversized_workdir_naming_big_files(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "weights.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(InvalidArgument) as err:
        pack(tmp_path / "w", max_bytes=10_000)
    assert "weights.bin" in err.value.message and ".styxignore" in err.value.message


def test_pack_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="is not a directory"):
        pack(tmp_path / "nope")


def test_unpack_refuses_path_traversal(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        payload = b"owned"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(InvalidArgument):
        unpack(buf.getvalue(), tmp_path / "sandbox")
    assert not (tmp_path / "escape.txt").exists()


def _bomb(unpacked: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = unpacked
        tar.addfile(info, io.BytesIO(bytes(unpacked)))
    return buf.getvalue()


def test_a_gzip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = _bomb(300 * 2**20)
    assert len(data) < 1 * 2**20  # far under the packed limit
    with pytest.raises(InvalidArgument) as err:
        unpack(data, tmp_path / "out")
    assert "unpacks to more than 256 MiB" in err.value.message
    assert not (tmp_path / "out").exists()


def test_an_archive_under_the_unpacked_limit_unpacks(tmp_path: Path) -> None:
    unpack(_bomb(2**20), tmp_path / "out")
    assert (tmp_path / "out" / "zeros.bin").stat().st_size == 2**20
