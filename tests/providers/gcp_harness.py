"""Contract harness for the gcp provider: the real google-cloud-compute client against
tests/fakes/gcp_compute.py, a local FAKE speaking the documented Compute Engine REST wire
format (no runnable Compute Engine exists outside Google). Ground truth is the fake's state.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fakes.gcp_compute import FakeCompute
from styx.provider import Offer, Provider
from styx.provisioner.bootstrap import parse_startup_env

PROJECT = "styx-contract"
ZONE = "us-central1-a"


class GcpHarness:
    """The gcp provider configured (anonymous credentials) against a fresh fake."""

    name = "gcp"
    supports_spot = True

    def __init__(self) -> None:
        from styx_plugins.gcp.config import GcpSettings
        from styx_plugins.gcp.provider import GcpProvider

        self.fake = FakeCompute(op_delay_s=0.02).start()
        settings = GcpSettings.from_env(
            {"STYX_GCP_PROJECT": PROJECT, "STYX_GCP_COMPUTE_ENDPOINT": self.fake.endpoint, "STYX_GCP_ANONYMOUS": "1"}
        )
        self._provider = GcpProvider(settings=settings, poll_s=0.05)

    def provider(self) -> Provider:
        return self._provider

    def offer(self) -> Offer:
        return Offer(
            provider="gcp", region="us-central1", zone=ZONE, instance_type="e2-standard-2", cpus=2, memory_gib=8,
            price_per_hour=0.067, spot_price_per_hour=0.0201,
        )  # fmt: skip

    def live_instances(self) -> dict[str, str]:
        out = {}
        for iid, inst in self.fake.live().items():
            if (inst.get("labels") or {}).get("styx-managed") == "true":
                out[iid] = inst["labels"]["styx-node-id"]
        return out

    def is_spot(self, instance_id: str) -> bool:
        scheduling = self.fake.live()[instance_id].get("scheduling") or {}
        return scheduling.get("provisioningModel") == "SPOT"

    def boot_env(self, instance_id: str) -> dict[str, str]:
        items = self.fake.live()[instance_id]["metadata"]["items"]
        script = next(i["value"] for i in items if i["key"] == "startup-script")
        return parse_startup_env(script)

    def close(self) -> None:
        self.fake.stop()


def make_harness(tmp_path: Path) -> GcpHarness:
    """Contract-suite entry point (see conftest.py)."""
    if importlib.util.find_spec("google.cloud.compute_v1") is None:
        pytest.skip("google-cloud-compute is not installed (pip install 'styx[gcp]')")
    return GcpHarness()
