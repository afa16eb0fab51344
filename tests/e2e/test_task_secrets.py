"""A task hunts for the control plane's credentials and finds none in any environment.

The task walks its ancestors (agent, provisioner, ...) through /proc and dumps their
environments and command lines, and its own environment: neither the plane's shared
token nor a node token, nor a variable naming a token file or STYX_HOME, may be there.
The plane's files are private to the user (0600 files, 0700 directories), sandboxes too.

What this does not cover: tasks run as the same user as the plane, so a task that knows
where the plane keeps its token file (the default ~/.styx, or STYX_HOME found in an
ancestor's environment) can read it; keeping that from tasks needs them to run as
another user.
"""

from __future__ import annotations

import json
import stat
import sys

from helpers import SkyCli

HUNT = r"""
import json, os
found = {"env": dict(os.environ), "ancestors": [], "cwd_mode": oct(os.stat(".").st_mode & 0o777)}
pid = os.getppid()
while pid > 1:
    entry = {"pid": pid}
    for what in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{what}", "rb") as f:
                entry[what] = f.read().decode(errors="replace").split("\0")
        except OSError as exc:
            entry[what] = [f"unreadable: {exc.strerror}"]
    found["ancestors"].append(entry)
    with open(f"/proc/{pid}/status") as f:
        pid = int(next(line.split()[1] for line in f if line.startswith("PPid:")))
print(json.dumps(found))
"""


def test_a_task_finds_no_credential_in_any_environment(sky: SkyCli) -> None:
    (sky.home / "hunt.py").write_text(HUNT)
    proc = sky("run", "--name", "hunt", "--", sys.executable, str(sky.home / "hunt.py"))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    token = (sky.home / "local" / "token").read_text().strip()
    text = proc.stdout
    assert len(found["ancestors"]) >= 2  # bash and the agent at least
    assert any("styx.agent" in " ".join(a["cmdline"]) for a in found["ancestors"])
    assert token not in text, "the plane's shared token is visible to tasks"
    assert "styx-node." not in text and "styx-join." not in text, "a node token is visible to tasks"
    for name in ("STYX_TOKEN", "STYX_TOKEN_FILE", "STYX_JOIN_TOKEN", "STYX_HOME"):
        assert name not in found["env"], f"{name} is in the task's environment"
    for ancestor in found["ancestors"]:
        names = {item.partition("=")[0] for item in ancestor["environ"]}
        assert not names & {"STYX_TOKEN", "STYX_TOKEN_FILE", "STYX_JOIN_TOKEN"}, ancestor["cmdline"]
    assert found["cwd_mode"] == "0o700", "the task's sandbox is readable by other users"


def test_the_planes_files_are_private(sky: SkyCli) -> None:
    sky.ok("run", "--", "true")
    checked = 0
    for path in [
        sky.home / "local",
        sky.home / "state",
        *(sky.home / "local").rglob("*"),
        *(sky.home / "state").rglob("*"),
    ]:
        if path.is_symlink() or not path.exists():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}: readable by other users"
        checked += 1
    assert checked >= 5
    logs = list((sky.home / "local").rglob("*.log"))
    dbs = list((sky.home / "state").rglob("*.db")) or list(sky.home.rglob("*.db"))
    assert logs and dbs
    for path in [*logs, *dbs]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
