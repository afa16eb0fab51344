"""`sky check`, `sky show-gpus`, `sky catalog import | list`, `sky launch --dryrun` on real
catalogs and `sky status -v`, as a user types them, against one local plane of its own.

The plane's local provider advertises 2 CPUs and 4 GiB (STYX_LOCAL_NODE_*), so the free
local host offer never wins the catalog requests below. The shared SkyPilot catalogs
(../shared/catalogs, never committed) are optional: those tests skip when they are absent.
Each dryrun's choice is checked against a brute-force minimum over the same CSVs, read
with the broker's own loader.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO_ROOT, SkyCli, make_sky_cli

# STYX_SHARED_CATALOGS points elsewhere (e.g. from a git worktree).
SHARED_CATALOGS = Path(os.environ.get("STYX_SHARED_CATALOGS") or REPO_ROOT.parent / "shared" / "catalogs")
LOCAL_ENV = {"STYX_LOCAL_NODE_CPUS": "2", "STYX_LOCAL_NODE_MEMORY_GIB": "4"}
CLOUDS = ("aws", "azure", "gcp")
needs_catalogs = pytest.mark.skipif(
    not (SHARED_CATALOGS / "gcp" / "vms.csv").is_file(), reason=f"no shared catalogs at {SHARED_CATALOGS}"
)


class CappedSky(SkyCli):
    """A SkyCli whose every command (hence the plane it starts) gets LOCAL_ENV."""

    def __call__(self, *args: str, timeout: float = 120.0, **env: str) -> Any:
        return super().__call__(*args, timeout=timeout, **{**LOCAL_ENV, **env})


@pytest.fixture(scope="module")
def sky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CappedSky]:
    """One plane for the module; make_sky_cli runs `sky local down` when this fixture ends."""
    for base in make_sky_cli(tmp_path_factory, "catalog-home"):
        yield CappedSky(base.home)


@cache
def shared_offers() -> list[Any]:
    """Every offer of the shared catalogs, parsed by the broker's loader (as the CLI does)."""
    from styx.common.skypilot_csv import load_skypilot_dir

    offers, _ = load_skypilot_dir(SHARED_CATALOGS)
    return [o for items in offers.values() for o in items]


def test_check_lists_every_provider_with_reasons(sky: CappedSky) -> None:
    proc = sky.ok("check")
    assert "Traceback" not in proc.stderr
    providers = {p["name"]: p for p in json.loads(sky.ok("check", "--json").stdout)}
    assert providers["local"]["enabled"], providers
    assert re.search(r"^\s+local\s+enabled$", proc.stdout, re.M), proc.stdout
    for name in CLOUDS:
        assert name in providers, f"{name} plugin not loaded: {providers}"
        info = providers[name]
        if info["enabled"]:
            assert re.search(rf"^\s+{name}\s+enabled$", proc.stdout, re.M), proc.stdout
        else:
            # A disabled provider always says why, and the text output shows it with the fix.
            assert info["reason"], info
            assert f"disabled: {info['reason']}" in proc.stdout, proc.stdout
            if info["hint"]:
                assert f"fix: {info['hint']}" in proc.stdout
    only = json.loads(sky.ok("check", "local", "--json").stdout)
    assert [p["name"] for p in only] == ["local"]
    bad = sky("check", "nosuchcloud")
    assert bad.returncode == 2 and "nosuchcloud" in bad.stderr


def test_show_gpus_on_the_builtin_catalog(sky: CappedSky) -> None:
    catalogs = json.loads(sky.ok("catalog", "list", "--json").stdout)
    if any(c["source"] == "imported" for c in catalogs):
        pytest.skip("the catalog was already imported in this plane")
    assert {c["provider"] for c in catalogs} >= set(CLOUDS)
    sky.ok("show-gpus")  # enabled providers only: maybe nothing, never an error
    table = sky.ok("show-gpus", "--all")
    assert re.search(r"^A100\s", table.stdout, re.M), table.stdout
    accels = {a["name"]: a for a in json.loads(sky.ok("show-gpus", "--all", "--json").stdout)}
    assert "A100" in accels and 8 in accels["A100"]["counts"]
    for entry in accels["A100"]["by_provider"]:
        assert entry["cheapest"]["price_per_hour"] > 0
    offers = json.loads(sky.ok("show-gpus", "A100:8", "--all", "--json").stdout)
    assert offers and all(o["accelerator_count"] == 8 for o in offers)
    prices = [o["price_per_hour"] for o in offers]
    assert prices == sorted(prices)
    pinned = json.loads(sky.ok("show-gpus", "A100", "--all", "--infra", "aws", "--json").stdout)
    assert pinned and {o["provider"] for o in pinned} == {"aws"}
    missing = sky("show-gpus", "NOSUCHGPU", "--all")
    assert missing.returncode == 1 and "NOSUCHGPU" in missing.stderr


@needs_catalogs
def test_catalog_import_of_the_shared_catalogs(sky: CappedSky) -> None:
    proc = sky.ok("catalog", "import", "--format", "skypilot", str(SHARED_CATALOGS), timeout=300)
    print(proc.stdout)
    assert re.search(r"imported [\d,]+ offers of 3 provider\(s\)", proc.stdout), proc.stdout
    catalogs = {c["provider"]: c for c in json.loads(sky.ok("catalog", "list", "--json").stdout)}
    expected: dict[str, int] = {}
    for offer in shared_offers():
        expected[offer.provider] = expected.get(offer.provider, 0) + 1
    for name in CLOUDS:
        assert catalogs[name]["source"] == "imported" and catalogs[name]["imported_at"], catalogs[name]
        assert catalogs[name]["offers"] == expected[name]
    bad = sky("catalog", "import", "--format", "terraform", str(SHARED_CATALOGS))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    missing = sky("catalog", "import", "--format", "skypilot", str(SHARED_CATALOGS / "nope"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr


def _gpu(name: str, count: int) -> Callable[[Any], bool]:
    return lambda o: o.arch == "x86_64" and o.accelerator_count == count and o.accelerator_name.upper() == name


def _cpus_at_least(n: float) -> Callable[[Any], bool]:
    """CPU-only offers a request may get by default: x86_64, general-purpose families."""
    from styx.common import catalog_rules

    return lambda o: (
        o.accelerator_count == 0
        and o.cpus >= n
        and o.arch == "x86_64"
        and catalog_rules.is_general(o.provider, o.instance_type)
    )


# (flags, which offers qualify, spot market)
CASES = {
    "gpu": (["--gpus", "A100:8"], _gpu("A100", 8), False),
    "cpu-only": (["--cpus", "8+"], _cpus_at_least(8), False),
    "spot": (["--gpus", "A100:8", "--use-spot"], _gpu("A100", 8), True),
    "provider-pinned": (["--infra", "gcp", "--cpus", "8+"], lambda o: o.provider == "gcp" and _cpus_at_least(8)(o),
                        False),
    "region-pinned": (["--infra", "aws/us-east-1", "--gpus", "A100:8"],
                      lambda o: o.provider == "aws" and o.region == "us-east-1" and _gpu("A100", 8)(o), False),
}
OFFER_LINE = re.compile(r"(chosen|cheapest): (\S+) (\S+) \(.*?\) \$([\d.]+)/h")


@needs_catalogs
@pytest.mark.parametrize("case", list(CASES))
def test_dryrun_picks_the_cheapest_feasible_offer(sky: CappedSky, case: str) -> None:
    catalogs = json.loads(sky.ok("catalog", "list", "--json").stdout)
    if not all(c["source"] == "imported" for c in catalogs if c["provider"] in CLOUDS):
        sky.ok("catalog", "import", "--format", "skypilot", str(SHARED_CATALOGS), timeout=300)
    flags, fits, spot = CASES[case]
    started = time.perf_counter()
    proc = sky("launch", "--dryrun", *flags, "--", "echo", "hi")
    wall = time.perf_counter() - started
    broker_ms = re.search(r"ranked by the broker in ([\d.]+) ms", proc.stderr)
    print(f"dryrun {case} ({' '.join(flags)}): wall {wall * 1000:.0f} ms, "
          f"broker {broker_ms.group(1) if broker_ms else '?'} ms")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def price(o: Any) -> float:
        return o.spot_price_per_hour if spot else o.price_per_hour

    candidates = [o for o in shared_offers() if fits(o) and (not spot or o.spot_price_per_hour > 0)]
    assert candidates, f"no {case} offer in the shared catalogs"
    best = min(price(o) for o in candidates)
    match = OFFER_LINE.search(proc.stdout)
    assert match, proc.stdout
    place, itype, shown = match.group(2), match.group(3), float(match.group(4))
    chosen = [o for o in candidates if "/".join(p for p in (o.provider, o.region, o.zone) if p) == place
              and o.instance_type == itype]
    assert chosen, f"{place} {itype} is not a {case} offer of the catalog:\n{proc.stdout}"
    assert min(price(o) for o in chosen) == pytest.approx(best, abs=1e-9), (best, proc.stdout)
    assert shown == pytest.approx(best, abs=0.006)
    assert "runner-up:" in proc.stdout, proc.stdout
    if spot:
        assert f"${shown:.2f}/h spot" in proc.stdout


@needs_catalogs
def test_dryrun_refuses_an_impossible_request_with_the_reason(sky: CappedSky) -> None:
    catalogs = json.loads(sky.ok("catalog", "list", "--json").stdout)
    if not all(c["source"] == "imported" for c in catalogs if c["provider"] in CLOUDS):
        sky.ok("catalog", "import", "--format", "skypilot", str(SHARED_CATALOGS), timeout=300)
    proc = sky("launch", "--dryrun", "--gpus", "A100:3", "--", "echo", "hi")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no offer fits" in proc.stdout and "A100 per instance, request wants A100:3" in proc.stdout, proc.stdout
    assert "no offer of the catalog can run it" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_status_verbose_shows_attempts_and_events(sky: CappedSky) -> None:
    task_id = sky.ok("run", "--detach", "--", "echo", "hi").stdout.strip()
    deadline = time.monotonic() + 60
    while sky.task(task_id)["state"] not in ("SUCCEEDED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.2)
    proc = sky.ok("status", "-v", task_id)
    assert f"{task_id} (" in proc.stdout and "events:" in proc.stdout, proc.stdout
    assert re.search(r"provisioning attempts", proc.stdout), proc.stdout
    data = json.loads(sky.ok("status", "-v", "--json", task_id).stdout)[0]
    assert [e["type"] for e in data["events"]][:1] == ["SUBMITTED"]
    assert isinstance(data["provisioning_attempts"], list)
    plain = json.loads(sky.ok("status", "--json", task_id).stdout)[0]
    assert "events" not in plain and "provisioning_attempts" not in plain
