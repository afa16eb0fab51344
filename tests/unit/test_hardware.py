"""Hardware detection (CPUs, memory, NVIDIA GPUs) and the local provider's host offer."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from styx.agent import hardware
from styx_plugins.local.provider import LocalProvider


def _fake_nvidia_smi(directory: Path, body: str) -> Path:
    """Put an executable ``nvidia-smi`` shell script in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory put first on PATH."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}:/usr/bin:/bin")
    return directory


TWO_GPUS = """\
case "$*" in
  *--query-gpu=index,name,memory.total*--format=csv,noheader,nounits*)
    echo "0, NVIDIA H100 80GB HBM3, 81559"
    echo "1, NVIDIA H100 80GB HBM3, 81559"
    ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


def test_two_gpus_are_parsed(fake_bin: Path) -> None:
    _fake_nvidia_smi(fake_bin, TWO_GPUS)
    gpus = hardware.detect_gpus()
    assert [g.index for g in gpus] == [0, 1]
    assert {g.name for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert gpus[0].memory_gib == pytest.approx(81559 / 1024, abs=0.01)


def test_failing_nvidia_smi_means_no_gpus(fake_bin: Path) -> None:
    _fake_nvidia_smi(fake_bin, 'echo "NVIDIA-SMI has failed because it could not communicate" >&2\nexit 9\n')
    assert hardware.detect_gpus() == []


def test_missing_nvidia_smi_means_no_gpus(fake_bin: Path) -> None:
    if any((Path(d) / "nvidia-smi").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("a real nvidia-smi is installed in /usr/bin or /bin")
    assert hardware.detect_gpus() == []


def test_parse_tolerates_odd_lines() -> None:
    text = "2, Tesla T4, [N/A]\ngarbage\n\nx, bad index, 10\n0, NVIDIA A100-SXM4-80GB, 81920\n"
    gpus = hardware.parse_nvidia_smi(text)
    assert [(g.index, g.name, g.memory_gib) for g in gpus] == [
        (0, "NVIDIA A100-SXM4-80GB", 80.0),
        (2, "Tesla T4", 0.0),
    ]


def test_cpus_and_memory_are_positive() -> None:
    cap = hardware.detect_capacity()
    assert cap.cpus >= 1
    assert cap.memory_gib > 0


def test_local_offer_reports_host_gpus(fake_bin: Path) -> None:
    _fake_nvidia_smi(fake_bin, TWO_GPUS)
    (offer,) = LocalProvider().offers()
    assert (offer.provider, offer.region, offer.instance_type) == ("local", "local", "host")
    assert offer.accelerator_name == "NVIDIA H100 80GB HBM3"
    assert offer.accelerator_count == 2
    assert offer.price_per_hour == 0
    assert offer.max_instances == 1
    assert offer.cpus == hardware.detect_cpus()


def test_local_offer_overrides_from_env(fake_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYX_LOCAL_NODE_CPUS", "3")
    monkeypatch.setenv("STYX_LOCAL_NODE_MEMORY_GIB", "1.5")
    monkeypatch.setenv("STYX_LOCAL_MAX_NODES", "4")
    (offer,) = LocalProvider().offers()
    assert (offer.cpus, offer.memory_gib, offer.max_instances) == (3.0, 1.5, 4)
    assert offer.accelerator_count == 0
