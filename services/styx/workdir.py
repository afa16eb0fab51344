"""Workdir archives: the client packs a directory, the agent unpacks it into a sandbox.

Packing honours the directory's top-level ``.gitignore`` and ``.styxignore`` (git's
pattern syntax, via pathspec) and always leaves out ``.git/``. Unpacking refuses anything
that would land outside the destination (absolute paths, ``..``, links pointing out,
devices), using tarfile's "data" filter.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from styx.common.errors import InvalidArgument

MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
# What an archive may hold once unpacked: the packed limit alone lets a gzip bomb through
# (300 MiB of zeros packs to 300 KiB). Checked at SubmitJob and again by the agent.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 100_000
IGNORE_FILES = (".gitignore", ".styxignore")


def _ignore_spec(root: Path) -> object:
    import pathspec

    lines = [".git/"]
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def pack(directory: str | Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> bytes:
    """Return a gzip-compressed tar of ``directory`` minus ignored files.

    Raises InvalidArgument when the directory is missing or the archive grows past
    ``max_bytes``, naming the largest files so the user knows what to ignore.
    """
    root = Path(directory).expanduser().resolve()
    if not root.is_dir():
        raise InvalidArgument(f"workdir: {directory} is not a directory")
    spec = _ignore_spec(root)
    files: list[tuple[int, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not spec.match_file(f"{(rel_dir / d).as_posix()}/"))  # type: ignore[attr-defined]
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            if not spec.match_file(rel):  # type: ignore[attr-defined]
                full = Path(dirpath) / name
                files.append((full.lstat().st_size, rel))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for _, rel in files:
            tar.add(root / rel, arcname=rel, recursive=False)
            if buf.tell() > max_bytes:
                break
    if buf.tell() > max_bytes:
        biggest = ", ".join(f"{rel} ({size / 2**20:.1f} MiB)" for size, rel in sorted(files, reverse=True)[:3])
        raise InvalidArgument(
            f"workdir: {root} packs to more than {max_bytes // 2**20} MiB; list big files in .styxignore "
            f"(largest: {biggest})"
        )
    return buf.getvalue()


def check(data: bytes, max_unpacked: int = MAX_UNPACKED_BYTES, max_members: int = MAX_MEMBERS) -> None:
    """Raise InvalidArgument unless ``data`` is a gzip tar whose members add up to at most
    ``max_unpacked`` bytes (their headers' sizes: what extraction writes) and number at
    most ``max_members``. Reads the stream once and stops at the first limit passed."""
    total = count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tar:
            for member in tar:
                total += member.size
                count += 1
                if total > max_unpacked:
                    raise InvalidArgument(
                        f"job.workdir_archive: unpacks to more than {max_unpacked // 2**20} MiB; "
                        "list big files in .styxignore"
                    )
                if count > max_members:
                    raise InvalidArgument(f"job.workdir_archive: more than {max_members} files; ignore some")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidArgument(f"job.workdir_archive: not a gzip-compressed tar archive: {exc}") from None


def unpack(data: bytes, destination: str | Path, max_unpacked: int = MAX_UNPACKED_BYTES) -> None:
    """Extract an archive made by ``pack`` into ``destination`` safely (size-checked first)."""
    check(data, max_unpacked)
    dest = Path(destination)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidArgument(f"workdir archive: cannot unpack: {exc}") from exc
