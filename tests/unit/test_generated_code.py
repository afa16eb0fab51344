"""The committed stubs under services/styx/v1 are exactly what proto/generate.py produces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("styx_proto_generate", REPO / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    _load_generator().generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "styx" / "v1").iterdir()}
    committed = {
        p.name: p.read_bytes()
        for p in (REPO / "services" / "styx" / "v1").iterdir()
        if p.suffix in (".py", ".pyi", ".proto") and p.name != "__init__.py"
    }
    assert sorted(fresh) == sorted(committed), "stub files differ: run `python proto/generate.py`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated stubs {stale}: run `python proto/generate.py` and commit"


def test_every_proto_item_is_documented() -> None:
    """Every service, rpc, message, field, enum and enum value has a leading comment."""
    import re

    undocumented = []
    for proto in sorted((REPO / "proto" / "styx" / "v1").glob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            is_item = re.match(r"^(service|rpc|message|enum|oneof)\s", stripped) or re.match(
                r"^(repeated\s+|optional\s+)?[\w.<>, ]+\s+\w+\s*=\s*\d+\s*(\[.*\])?;", stripped
            )
            if not is_item:
                continue
            prev = lines[i - 1].strip() if i else ""
            if not prev.startswith("//"):
                undocumented.append(f"{proto.name}:{i + 1}: {stripped}")
    assert not undocumented, "undocumented proto items:\n" + "\n".join(undocumented)


def test_enums_start_with_unspecified() -> None:
    from styx.v1 import agent_pb2, broker_pb2, common_pb2, provisioner_pb2, scheduler_pb2

    for module in (common_pb2, scheduler_pb2, broker_pb2, provisioner_pb2, agent_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            zero = enum.values_by_number[0].name
            assert zero.endswith("_UNSPECIFIED"), f"{enum.full_name} starts with {zero}"


def test_mutating_rpcs_take_a_request_id() -> None:
    from styx.v1 import broker_pb2, provisioner_pb2, scheduler_pb2

    mutating = {
        scheduler_pb2: ["SubmitJob", "CancelTask"],
        broker_pb2: ["RegisterNode"],
        provisioner_pb2: ["Provision", "Terminate"],
    }
    for module, names in mutating.items():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.name in names:
                    assert "request_id" in method.input_type.fields_by_name, method.full_name
