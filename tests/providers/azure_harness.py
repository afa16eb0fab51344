"""Contract harness for the Azure provider: the real azure-mgmt-compute client against
tests/fakes/azure_compute.py, a fake speaking ARM's documented REST wire format (no
runnable ARM exists). Ground truth is the fake's own store, not what the provider says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes.azure_compute import FakeAzureCompute
from styx.provider import Offer, Provider
from styx.provisioner.bootstrap import parse_startup_env
from styx_plugins.azure.provider import AzureProvider


class AzureHarness:
    """The Azure provider pointed at a fresh fake ARM endpoint."""

    name = "azure"
    supports_spot = True

    def __init__(self) -> None:
        self.fake = FakeAzureCompute().start()
        self._provider = AzureProvider(env=self.fake.env())

    def provider(self) -> Provider:
        return self._provider

    def offer(self) -> Offer:
        return Offer(
            provider="azure",
            region="eastus",
            zone="1",
            instance_type="Standard_D2s_v5",
            cpus=2,
            memory_gib=8,
            price_per_hour=0.096,
            spot_price_per_hour=0.0192,
        )

    def live_instances(self) -> dict[str, str]:
        return {vm.id: vm.tags["styx-node-id"] for vm in self.fake.styx_vms()}

    def is_spot(self, instance_id: str) -> bool:
        vm = next(v for v in self.fake.vms() if v.id == instance_id)
        return vm.is_spot

    def boot_env(self, instance_id: str) -> dict[str, str]:
        vm = next(v for v in self.fake.vms() if v.id == instance_id)
        return parse_startup_env(vm.custom_data)

    def close(self) -> None:
        self.fake.close()


def make_harness(tmp_path: Path) -> AzureHarness:
    """Contract-suite entry point (see conftest.py); skips without the Azure SDK."""
    pytest.importorskip("azure.mgmt.compute", reason="pip install 'styx[azure]'")
    return AzureHarness()
