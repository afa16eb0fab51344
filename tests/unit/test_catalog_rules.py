"""Catalog adapters: each cloud's family -> (architecture, category) rule, and the registry."""

from __future__ import annotations

import pytest

from styx.common import catalog_rules
from styx.common.catalog_rules import ACCELERATED, COMPUTE, GENERAL, HPC, MEMORY, OTHER, STORAGE, FamilyClass

CASES = [
    # AWS: Graviton is the "g" attribute after the generation; a1 and mac2 are ARM too.
    ("aws", "m6i.xlarge", "x86_64", GENERAL),
    ("aws", "m7i-flex.large", "x86_64", GENERAL),
    ("aws", "t3.micro", "x86_64", GENERAL),
    ("aws", "m7g.large", "arm64", GENERAL),
    ("aws", "m7gd.large", "arm64", GENERAL),
    ("aws", "t4g.nano", "arm64", GENERAL),
    ("aws", "a1.large", "arm64", GENERAL),
    ("aws", "c7gn.16xlarge", "arm64", COMPUTE),
    ("aws", "c6a.xlarge", "x86_64", COMPUTE),
    ("aws", "r8g.xlarge", "arm64", MEMORY),
    ("aws", "x2iedn.xlarge", "x86_64", MEMORY),
    ("aws", "u-6tb1.56xlarge", "x86_64", MEMORY),
    ("aws", "z1d.large", "x86_64", MEMORY),
    ("aws", "i4i.large", "x86_64", STORAGE),
    ("aws", "i4g.large", "arm64", STORAGE),
    ("aws", "im4gn.large", "arm64", STORAGE),
    ("aws", "is4gen.large", "arm64", STORAGE),
    ("aws", "d3.xlarge", "x86_64", STORAGE),
    ("aws", "p4d.24xlarge", "x86_64", ACCELERATED),
    ("aws", "g4ad.xlarge", "x86_64", ACCELERATED),
    ("aws", "g5g.xlarge", "arm64", ACCELERATED),
    ("aws", "inf2.xlarge", "x86_64", ACCELERATED),
    ("aws", "hpc7g.4xlarge", "arm64", HPC),
    ("aws", "mac1.metal", "x86_64", OTHER),
    ("aws", "mac2-m2pro.metal", "arm64", OTHER),
    # GCP: the series says both; t2a, c4a, n4a and a4x are ARM.
    ("gcp", "n2-standard-8", "x86_64", GENERAL),
    ("gcp", "e2-medium", "x86_64", GENERAL),
    ("gcp", "c4d-highcpu-16", "x86_64", GENERAL),
    ("gcp", "t2a-standard-8", "arm64", GENERAL),
    ("gcp", "c4a-highmem-16", "arm64", GENERAL),
    ("gcp", "c2d-highcpu-2", "x86_64", COMPUTE),
    ("gcp", "m3-megamem-64", "x86_64", MEMORY),
    ("gcp", "z3-highmem-88", "x86_64", STORAGE),
    ("gcp", "a2-highgpu-8g", "x86_64", ACCELERATED),
    ("gcp", "a4x-highgpu-4g", "arm64", ACCELERATED),
    ("gcp", "n1-340-48-tpu", "x86_64", ACCELERATED),
    ("gcp", "h3-standard-88", "x86_64", HPC),
    # Azure: family letters say the category, a "p" feature letter says ARM.
    ("azure", "Standard_D4s_v5", "x86_64", GENERAL),
    ("azure", "Standard_D11_v2_Promo", "x86_64", GENERAL),
    ("azure", "Standard_B2ats_v2", "x86_64", GENERAL),
    ("azure", "Standard_D4ps_v5", "arm64", GENERAL),
    ("azure", "Standard_B2pts_v2", "arm64", GENERAL),
    ("azure", "Standard_D8plds_v6", "arm64", GENERAL),
    ("azure", "Standard_E4pds_v5", "arm64", MEMORY),
    ("azure", "Standard_E4-2ds_v5", "x86_64", MEMORY),
    ("azure", "Standard_F8ams_v6", "x86_64", COMPUTE),
    ("azure", "Standard_FX12-6mds_v2", "x86_64", COMPUTE),
    ("azure", "Standard_L8s_v3", "x86_64", STORAGE),
    ("azure", "Standard_NC24ads_A100_v4", "x86_64", ACCELERATED),
    ("azure", "Standard_HB120rs_v3", "x86_64", HPC),
    ("azure", "Standard_DC2as_v5", "x86_64", OTHER),
]


@pytest.mark.parametrize(("provider", "itype", "arch", "category"), CASES, ids=[c[1] for c in CASES])
def test_family_rules(provider, itype, arch, category):
    assert catalog_rules.classify(provider, itype) == FamilyClass(arch, category)
    assert catalog_rules.resolve_arch(provider, itype, "x86_64") == arch  # the family wins over a filled-in column
    assert catalog_rules.is_general(provider, itype) == (category in (GENERAL, COMPUTE, MEMORY))


def test_unknown_providers_and_names_have_no_opinion():
    assert catalog_rules.classify("lambda", "gpu_1x_a100") is None
    assert catalog_rules.is_general("lambda", "gpu_1x_a100") and catalog_rules.category("lambda", "x") == ""
    assert catalog_rules.resolve_arch("lambda", "x", "aarch64") == "arm64"
    assert catalog_rules.resolve_arch("lambda", "x", "") == "x86_64"
    assert catalog_rules.classify("aws", "not-a-type") is None
    assert catalog_rules.classify("azure", "Basic_Nothing") is None


def test_register_overrides_and_removes():
    class Everything:
        def classify(self, instance_type):
            return FamilyClass("arm64", STORAGE)

        def row_sink(self):
            return None

    catalog_rules.register("aws", Everything())
    try:
        assert catalog_rules.classify("aws", "m6i.xlarge") == FamilyClass("arm64", STORAGE)
    finally:
        catalog_rules.register("aws", None)
    assert catalog_rules.classify("aws", "m6i.xlarge") == FamilyClass("x86_64", GENERAL)


def test_core_has_no_cloud_tables():
    """The GCP host and GPU tables live in the GCP plugin; the loader asks adapters, not names."""
    import inspect

    from styx.broker import catalog
    from styx.common import skypilot_csv

    for module in (catalog, skypilot_csv, catalog_rules):
        source = inspect.getsource(module)
        assert "_GCP_" not in source and 'provider == "gcp"' not in source and "a2-highgpu" not in source
