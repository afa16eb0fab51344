"""sky catalog refresh azure: the provisioner's azure plugin runs the real azure-mgmt-compute
SDK (Resource SKUs, ``GET .../providers/Microsoft.Compute/skus?$filter=location eq '...'``)
against tests/fakes/azure_compute.py, a fake speaking ARM's documented REST wire format (no
runnable Azure Resource Manager exists), and the CLI imports the offers into the broker's
catalog through the local plane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakes.azure_compute import RESTRICTED_SIZE, SKU_REGIONS, UNPRICED_SIZE, FakeAzureCompute, resource_skus
from helpers import run_sky

pytest.importorskip("azure.mgmt.compute", reason="pip install 'styx[azure]'")


def test_refresh_imports_azures_vm_sizes(tmp_path: Path) -> None:
    listed_sizes = {
        sku["name"]
        for region in SKU_REGIONS
        for sku in resource_skus(region)
        if sku["resourceType"] == "virtualMachines" and sku["name"] not in (RESTRICTED_SIZE, UNPRICED_SIZE)
    }
    home = tmp_path / "home"
    with FakeAzureCompute() as fake:
        env = {**fake.env(), "STYX_AZURE_REGIONS": ",".join(SKU_REGIONS)}
        try:
            refreshed = run_sky(["catalog", "refresh", "azure"], home, **env)
            assert refreshed.returncode == 0, refreshed.stderr
            assert "azure" in refreshed.stdout
            assert any(path.endswith("/providers/Microsoft.Compute/skus") for _, path in fake.requests)
            listed = run_sky(["catalog", "list", "--json"], home, **env)
            assert listed.returncode == 0, listed.stderr
            azure = next(c for c in json.loads(listed.stdout) if c["provider"] == "azure")
            # Three priced sizes per region; the restricted and the unpriced size are left out.
            assert azure["source"] == "imported"
            assert azure["offers"] == len(listed_sizes) * len(SKU_REGIONS) == 6
            assert azure["regions"] == len(SKU_REGIONS)
            dry = run_sky(["launch", "--dryrun", "--infra", "azure", "--cpus", "4", "--", "true"], home, **env)
            assert dry.returncode == 0, dry.stderr
            # The cheapest 4-vCPU size the fake listed, in the cheaper region (westeurope costs 1.12x).
            assert "chosen: azure/eastus Standard_D4s_v5" in dry.stdout, dry.stdout
            assert RESTRICTED_SIZE not in dry.stdout
        finally:
            run_sky(["local", "down"], home, **env)
