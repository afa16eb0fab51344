"""The broker refuses accelerator names nobody offers at once, with difflib's suggestions."""

from __future__ import annotations

from styx.broker.catalog import Catalog
from styx.broker.offers import unknown_accelerators
from styx.common.offers import Offer

CATALOG = Catalog(
    [
        Offer("aws", "us-east-1", "", "p4d.24xlarge", 96, 1152, "A100", 8, 40, 32.0),
        Offer("aws", "us-east-1", "", "g5.xlarge", 4, 16, "A10G", 1, 24, 1.0),
        Offer("gcp", "us-central1", "", "a3-highgpu-8g", 208, 1872, "H100", 8, 80, 88.0),
    ]
)


def test_a_typo_is_named_with_the_closest_catalog_names() -> None:
    reason = unknown_accelerators(CATALOG, ["A1000"], [])
    assert reason.startswith("unknown accelerator A1000; did you mean A100")
    assert "sky show-gpus" in reason and "\n" not in reason
    assert "did you mean" not in unknown_accelerators(CATALOG, ["ZZZZZZ"], [])


def test_known_names_pass_in_any_case_and_from_existing_machines() -> None:
    assert unknown_accelerators(CATALOG, ["h100"], []) == ""
    host = [Offer("local", "local", "", "host", 8, 32, "NVIDIA RTX-4090", 1)]
    assert unknown_accelerators(CATALOG, ["RTX"], host) == ""
    assert unknown_accelerators(CATALOG, ["4090"], host) == ""
    # Alternatives: one known name is enough (the others are explained with the offers).
    assert unknown_accelerators(CATALOG, ["A1000", "A100"], []) == ""
    assert unknown_accelerators(CATALOG, ["A1000", "H1000"], []).startswith("unknown accelerators A1000, H1000")
    assert unknown_accelerators(CATALOG, [], []) == ""
