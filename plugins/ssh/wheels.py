"""The agent's wheels for an SSH host: Styx built from this checkout, plus its dependencies.

A host gets everything it installs from here, so the install needs no network on the host
(reserved machines are often offline). ``wheel_set(python, machine)`` returns a folder of
``.whl`` files for that Python version and CPU:

- the Styx wheel, built once per source state (a copy of the checkout is built with this
  interpreter's pip, ``--no-build-isolation``, so no build back end is downloaded);
  ``STYX_SSH_WHEEL`` names a ready wheel instead (an installed Styx has no checkout);
- its runtime dependencies, by ``pip download --only-binary=:all:`` here, which is served
  from pip's cache and index configuration of this machine; for a host whose Python or
  CPU differs from this one, for that target (``--python-version`` / ``--platform``).

The folder is cached under ``STYX_SSH_WHEEL_CACHE`` (default ``~/.cache/styx/ssh-wheels``),
keyed by the source's file sizes and times, the target Python and the machine, and built
under a file lock, so concurrent provisioners build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from styx.provider import ProviderError, ProviderErrorKind, clip

_SOURCE_PARTS = ("services/styx", "plugins", "cli", "pyproject.toml", "README.md")
_LOCK = threading.Lock()
# Seconds a pip step may take (a first download of the dependencies is the slow one).
_PIP_TIMEOUT_S = 600.0


def cache_root() -> Path:
    """Where wheel sets are kept."""
    explicit = os.environ.get("STYX_SSH_WHEEL_CACHE", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "styx" / "ssh-wheels"


def source_root() -> Path | None:
    """The checkout this Styx runs from (``pyproject.toml`` beside ``services/styx``), or None."""
    import styx

    root = Path(styx.__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "services" / "styx").is_dir() else None


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for part in _SOURCE_PARTS:
        path = root / part
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix in (".pyc", ".pyo"):
                continue
            st = f.stat()
            digest.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def wheel_set(python: tuple[int, int], machine: str) -> Path:
    """A folder with the Styx wheel and every dependency's wheel for ``python`` on ``machine``."""
    explicit = os.environ.get("STYX_SSH_WHEEL", "").strip()
    root = source_root()
    if explicit:
        wheel = Path(explicit).expanduser()
        if not wheel.is_file():
            raise ProviderError(ProviderErrorKind.INVALID, f"STYX_SSH_WHEEL: no file {wheel}")
        source_key = hashlib.sha256(f"{wheel.resolve()}\0{wheel.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    elif root is None:
        raise ProviderError(
            ProviderErrorKind.INVALID,
            "the SSH provider installs the Styx wheel on hosts, but this Styx is not run from a checkout; "
            "set STYX_SSH_WHEEL to a built styx wheel (pip wheel --no-deps .)",
        )
    else:
        source_key = _fingerprint(root)
    key = f"{source_key}-py{python[0]}{python[1]}-{machine or 'unknown'}"
    target = cache_root() / key
    if (target / "DONE").is_file():
        return target
    with _LOCK:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (target / "DONE").is_file():
                return target
            _build(target, python, machine, root, Path(explicit).expanduser() if explicit else None)
    return target


def _build(target: Path, python: tuple[int, int], machine: str, root: Path | None, wheel: Path | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="styx-wheels-", dir=target.parent))
    try:
        out = work / "wheels"
        out.mkdir()
        if wheel is None:
            assert root is not None
            src = work / "src"
            for part in _SOURCE_PARTS:
                if (root / part).is_dir():
                    shutil.copytree(root / part, src / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                elif (root / part).is_file():
                    (src / part).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(root / part, src / part)
            _pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)], "build the Styx wheel")
            (built,) = out.glob("styx-*.whl")
        else:
            built = Path(shutil.copy2(wheel, out / wheel.name))
        here = sys.version_info[:2] == python and os.uname().machine == machine
        target_flags: list[str] = []
        if not here:
            target_flags = ["--python-version", f"{python[0]}.{python[1]}", "--implementation", "cp"]
            for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014"):
                target_flags += ["--platform", f"{tag}_{machine}"]
        _pip(
            ["download", "--only-binary=:all:", "-d", str(out), *target_flags, str(built)],
            f"download the agent's dependencies for Python {python[0]}.{python[1]} on {machine}",
        )
        (out / "DONE").write_text("")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(ProviderErrorKind.INTERNAL, f"could not {what}: {clip(str(exc))}") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
        raise ProviderError(ProviderErrorKind.INTERNAL, f"could not {what}: {clip(lines[-1] if lines else '', 300)}")


def wheels_in(folder: Path) -> list[Path]:
    """The ``.whl`` files of a wheel set, Styx's last."""
    return sorted(folder.glob("*.whl"), key=lambda p: (p.name.startswith("styx-"), p.name))
