"""The SSH provider's pure parts: the pool file (SkyPilot's format), the probe's output, the
python3 check, and the remote scripts' quoting. No SSH here (tests/e2e/test_sky_ssh.py has it)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from styx.provider import ProviderError, ProviderErrorKind
from styx_plugins.ssh.pools import PoolError, get_pool, load_pools, pools_path
from styx_plugins.ssh.remote import STOP_AGENT, parse_probe, require_python, sh_join


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ssh_node_pools.yaml"
    path.write_text(text)
    return path


def test_skypilot_format_with_host_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
my-box:
  hosts:
    - 10.0.0.1
    - ip: 10.0.0.2
      user: alice
      identity_file: ~/.ssh/alice
      port: 2222
  user: ubuntu
  identity_file: ~/.ssh/id_ed25519
  proxy_jump: bastion
other:
  hosts: [h1.example.com]
  password: hunter2
  accept_new_host_keys: true
""",
    )
    pools = load_pools(path)
    assert sorted(pools) == ["my-box", "other"]
    a, b = pools["my-box"].hosts
    assert (a.ip, a.user, a.port, a.proxy_jump) == ("10.0.0.1", "ubuntu", 22, "bastion")
    assert a.identity_file == str(Path("~/.ssh/id_ed25519").expanduser())
    assert (b.ip, b.user, b.port, b.name) == ("10.0.0.2", "alice", 2222, "10.0.0.2:2222")
    assert b.identity_file.endswith("/.ssh/alice") and not b.accept_new_host_keys
    (h,) = pools["other"].hosts
    assert h.accept_new_host_keys and h.password == "hunter2"
    assert "hunter2" not in repr(h)  # the password never reaches a log line through repr
    assert pools["my-box"].host("10.0.0.2:2222") is b


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        (
            "p:\n  hosts: [10.0.0.1]\n  identiy_file: x\n",
            "pool 'p': unknown key 'identiy_file' (did you mean 'identity_file'?)",
        ),
        (
            "p:\n  hosts:\n    - ip: 10.0.0.1\n      usr: bob\n",
            "pool 'p' hosts[0]: unknown key 'usr' (did you mean 'user'?)",
        ),
        ("p:\n  hosts: []\n", "pool 'p': `hosts` must be a non-empty list"),
        ("p:\n  hosts: [10.0.0.1]\n  port: 70000\n", "`port` must be a number 1-65535"),
        ("p:\n  hosts: [10.0.0.1, 10.0.0.1]\n", "host 10.0.0.1 is listed twice"),
        ("p:\n  hosts: ['a b']\n", "'a b' is not a host name or address"),
        ("p:\n  hosts: [10.0.0.1]\n  accept_new_host_keys: maybe\n", "`accept_new_host_keys` must be true or false"),
        ("p: [1\n", "not valid YAML at line"),
        ("- a\n", "must map pool names to pools"),
        ("'bad name!':\n  hosts: [10.0.0.1]\n", "a pool name is letters"),
    ],
)
def test_mistakes_are_one_line_naming_the_key(tmp_path: Path, text: str, wanted: str) -> None:
    with pytest.raises(PoolError) as err:
        load_pools(write(tmp_path, text))
    message = str(err.value)
    assert wanted in message and "\n" not in message, message


def test_unknown_pool_names_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "a:\n  hosts: [10.0.0.1]\nb:\n  hosts: [10.0.0.2]\n")
    with pytest.raises(PoolError, match=r"ssh/nope: no such pool in .*known pools: a, b"):
        get_pool(path, "nope")
    assert load_pools(tmp_path / "absent.yaml") == {}


def test_pool_file_location(tmp_path: Path) -> None:
    assert pools_path({"STYX_HOME": str(tmp_path)}) == tmp_path / "ssh_node_pools.yaml"
    assert pools_path({"STYX_SSH_NODE_POOLS": str(tmp_path / "x.yaml"), "STYX_HOME": "/y"}) == tmp_path / "x.yaml"


def test_probe_output_is_parsed() -> None:
    info = parse_probe(
        "home=/home/u\ncpus=16\nmem_kib=65856972\npython=3 12 x86_64\n"
        "gpu=0, NVIDIA A100-SXM4-80GB, 81920\ngpu=1, NVIDIA A100-SXM4-80GB, 81920\n"
    )
    assert (info.home, info.cpus, info.memory_gib, info.python, info.arch) == ("/home/u", 16, 62.81, (3, 12), "x86_64")
    assert info.accelerator == ("A100", 2, 80.0)
    bare = parse_probe("home=/root\ncpus=2\nmem_kib=1024\npython=3 11 aarch64\n")
    assert bare.accelerator == ("", 0, 0.0) and bare.arch == "arm64"
    assert parse_probe("home=/root\ncpus=2\n").python is None


def test_python_older_than_311_is_refused_naming_the_host(tmp_path: Path) -> None:
    (host,) = load_pools(write(tmp_path, "old:\n  hosts: [10.0.0.9]\n  user: u\n"))["old"].hosts
    with pytest.raises(ProviderError) as err:
        require_python(parse_probe("home=/h\ncpus=1\npython=3 9 x86_64\n"), host)
    assert err.value.kind is ProviderErrorKind.INVALID
    assert "ssh/old u@10.0.0.9: python3 is 3.9; the Styx agent needs Python >= 3.11" in err.value.message
    with pytest.raises(ProviderError, match="no python3 on the host"):
        require_python(parse_probe("home=/h\ncpus=1\n"), host)


def test_remote_scripts_take_hostile_values_as_data(tmp_path: Path) -> None:
    """STOP_AGENT with a folder name full of shell syntax removes exactly that folder."""
    evil = tmp_path / "a b;touch pwned;$(touch pwned2)'\""
    (evil / "work").mkdir(parents=True)
    keep = tmp_path / "keep"
    keep.mkdir()
    line = sh_join(["sh", "-c", STOP_AGENT, "sh", str(evil), "node-x", "1"])
    assert shlex.split(line)[4] == str(evil)
    subprocess.run(line, shell=True, check=True, cwd=tmp_path, timeout=30)
    assert not evil.exists() and keep.exists()
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
