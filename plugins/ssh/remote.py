"""What runs on an SSH host: the hardware probe, and commands built from argv lists.

Every remote command line is built here with ``shlex.quote`` (``sh_join``) or is a fixed
script with its values passed as quoted positional arguments: nothing from a pool file, a
task or a node id is ever pasted into a shell line as is.

``probe`` learns in one round trip what the host has: CPUs (``nproc``), memory
(``/proc/meminfo``), GPUs (``nvidia-smi``, parsed like the agent does), the ``python3``
version and machine (the agent needs Python >= 3.11), and ``$HOME``.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from styx.agent.hardware import NVIDIA_SMI_QUERY, Gpu, parse_nvidia_smi
from styx.common.resources import gpu_model
from styx.provider import ProviderError, ProviderErrorKind, clip
from styx_plugins.ssh.pools import Host

MIN_PYTHON = (3, 11)

_PROBE = f"""
echo "home=$HOME"
echo "cpus=$(nproc 2>/dev/null || echo 0)"
echo "mem_kib=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo 2>/dev/null)"
if command -v python3 >/dev/null 2>&1; then
  echo "python=$(python3 -c 'import sys, platform; v = sys.version_info; print(v[0], v[1], platform.machine())' \\
    2>/dev/null)"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi {" ".join(NVIDIA_SMI_QUERY)} 2>/dev/null | sed 's/^/gpu=/'
fi
"""


@dataclass(frozen=True)
class HostInfo:
    """What a probe found on a host."""

    cpus: float
    memory_gib: float
    gpus: tuple[Gpu, ...]
    python: tuple[int, int] | None
    machine: str
    home: str

    @property
    def accelerator(self) -> tuple[str, int, float]:
        """(short name, count, GiB each) of the host's most common GPU ("NVIDIA A100-SXM4-80GB"
        is offered as "A100", as on Kubernetes); ("", 0, 0) without GPUs. The agent still
        registers every device by its full name; placement matches names by token."""
        if not self.gpus:
            return "", 0, 0.0
        name, count = Counter(g.name for g in self.gpus).most_common(1)[0]
        return gpu_model(name), count, max(g.memory_gib for g in self.gpus if g.name == name)

    @property
    def arch(self) -> str:
        """The host's CPU architecture as offers name it."""
        return "arm64" if self.machine in ("aarch64", "arm64") else (self.machine or "x86_64")


def sh_join(argv: Sequence[str]) -> str:
    """One shell command line whose words are exactly ``argv``."""
    return shlex.join(list(argv))


async def run(conn: Any, command: str, host: Host, what: str, timeout_s: float = 120.0, stdin: str = "") -> str:
    """Run ``command`` (built with ``sh_join`` or constant); its stdout, or a ProviderError
    naming the host, the step and the end of stderr."""
    import asyncssh

    try:
        result = await conn.run(command, check=False, timeout=timeout_s, input=stdin or None)
    except asyncssh.TimeoutError:
        raise ProviderError(ProviderErrorKind.INTERNAL, f"{host.where}: {what} took over {timeout_s:g} s") from None
    except (OSError, asyncssh.Error) as exc:
        raise ProviderError(ProviderErrorKind.INTERNAL, f"{host.where}: {what} failed ({clip(str(exc))})") from None
    if result.exit_status != 0:
        err = str(result.stderr or result.stdout or "").strip().splitlines()
        tail = clip(err[-1] if err else f"exit status {result.exit_status}", 200)
        raise ProviderError(ProviderErrorKind.INTERNAL, f"{host.where}: {what} failed: {tail}")
    return str(result.stdout or "")


async def probe(conn: Any, host: Host) -> HostInfo:
    """CPUs, memory, GPUs, python3 and $HOME of the host."""
    out = await run(conn, _PROBE, host, "hardware probe", timeout_s=30.0)
    return parse_probe(out)


def parse_probe(text: str) -> HostInfo:
    """Parse the probe's ``key=value`` lines (``gpu=`` lines are nvidia-smi's CSV)."""
    values: dict[str, str] = {}
    gpu_lines = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "gpu":
            gpu_lines.append(value)
        elif key:
            values[key] = value.strip()
    python: tuple[int, int] | None = None
    machine = ""
    words = values.get("python", "").split()
    if len(words) == 3 and words[0].isdigit() and words[1].isdigit():
        python, machine = (int(words[0]), int(words[1])), words[2]
    try:
        cpus = float(values.get("cpus") or 0)
    except ValueError:
        cpus = 0.0
    try:
        memory = round(int(values.get("mem_kib") or 0) / (1024 * 1024), 2)
    except ValueError:
        memory = 0.0
    return HostInfo(
        cpus, memory, tuple(parse_nvidia_smi("\n".join(gpu_lines))), python, machine, values.get("home", "")
    )


def require_python(info: HostInfo, host: Host) -> None:
    """Raise (INVALID, naming the host) unless the host has python3 >= 3.11."""
    want = ".".join(map(str, MIN_PYTHON))
    if info.python is None:
        raise ProviderError(
            ProviderErrorKind.INVALID, f"{host.where}: no python3 on the host; the Styx agent needs Python >= {want}"
        )
    if info.python < MIN_PYTHON:
        have = ".".join(map(str, info.python))
        raise ProviderError(
            ProviderErrorKind.INVALID,
            f"{host.where}: python3 is {have}; the Styx agent needs Python >= {want} (install it on the host)",
        )


#: Extracts every wheel of folder $1 into the running venv's site-packages: an install
#: with no network, no resolver and no pip on the host (the wheel set is complete).
EXTRACT_WHEELS = (
    "import pathlib, sys, sysconfig, zipfile\n"
    "site = sysconfig.get_paths()['purelib']\n"
    "for w in sorted(pathlib.Path(sys.argv[1]).glob('*.whl')):\n"
    "    zipfile.ZipFile(w).extractall(site)\n"
)

#: Starts the agent detached: ``sh -c START sh BASE ARGV...``. The token file is opened,
#: then removed, then handed to the agent as its stdin (STYX_TOKEN_STDIN=1): it is never on
#: a command line, and not on disk once the agent runs. setsid: the agent leads its own
#: session, so it survives the SSH session and its group can be stopped as a whole.
START_AGENT = """set -e
base=$1; shift
cd "$base"
exec 3< "$base/token"
rm -f "$base/token"
STYX_TOKEN_STDIN=1 STYX_HOME="$base/home" setsid nohup "$@" <&3 3<&- > "$base/agent.log" 2>&1 &
echo $! > "$base/agent.pid"
echo $!
"""

#: Stops a node's agent and its tasks and removes what was installed:
#: ``sh -c STOP sh BASE NODE_ID GRACE_S``. The pid is signalled only while its command
#: line still names the node (a recycled pid is left alone); SIGTERM lets the agent stop
#: its tasks, SIGKILL of its group follows after GRACE_S; the reaper then kills task groups
#: a killed agent left; finally BASE goes, and its parent too when empty.
STOP_AGENT = """base=$1; node=$2; grace=$3
pid=$(cat "$base/agent.pid" 2>/dev/null || true)
ours() { [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\\0' '\\n' < "/proc/$pid/cmdline" | grep -qxF -- "$node"; }
if ours; then
  kill -TERM "$pid" 2>/dev/null || true
  i=0
  while ours && [ "$i" -lt "$((grace * 10))" ]; do sleep 0.1; i=$((i + 1)); done
  if ours; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
fi
if [ -x "$base/venv/bin/python" ] && [ -d "$base/work" ]; then
  "$base/venv/bin/python" -c 'import pathlib, sys; from styx.agent.reaper import reap_leftovers
reap_leftovers(pathlib.Path(sys.argv[1]))' "$base/work" || true
fi
rm -rf -- "$base"
rmdir -- "$(dirname -- "$base")" 2>/dev/null || true
"""

#: Whether the agent of a node runs: ``sh -c ALIVE sh BASE NODE_ID`` prints "up" or "down".
AGENT_ALIVE = """pid=$(cat "$1/agent.pid" 2>/dev/null || true)
if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\\0' '\\n' < "/proc/$pid/cmdline" | grep -qxF -- "$2"; then
  echo up; else echo down; fi
"""

#: Whether the host reaches host:port over TCP: ``python3 -c REACH HOST PORT`` prints yes/no.
REACH = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print('yes')\n"
    "except OSError:\n"
    "    print('no')\n"
)

#: Stops every node folder under ROOT (``sh -c SWEEP sh ROOT GRACE_S STOP_AGENT``) and
#: prints the node ids it removed: what ``sky ssh down`` leaves behind on a host (nothing).
SWEEP = """root=$1; grace=$2; stop=$3
[ -d "$root" ] || exit 0
for d in "$root"/*/; do
  [ -d "$d" ] || continue
  n=$(basename -- "$d")
  sh -c "$stop" sh "${d%/}" "$n" "$grace"
  echo "$n"
done
rmdir -- "$root" 2>/dev/null || true
"""
