"""Pure parts of the Kubernetes provider: quantities, GPU names, pod shapes and offers, pod
names and labels, the pod manifest."""

from __future__ import annotations

import re

import pytest

from styx.common.resources import gpu_model, infra_parts
from styx.provider import AgentLaunch, CreateRequest, Offer
from styx_plugins.kubernetes import pods, shapes


def node(name: str, cpu: str, mem: str, gpus: int = 0, product: str = "", taints: list | None = None) -> dict:
    alloc = {"cpu": cpu, "memory": mem}
    labels = {"nvidia.com/gpu.product": product} if product else {}
    if gpus:
        alloc["nvidia.com/gpu"] = str(gpus)
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints or []},
        "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def pod(on: str, cpu: str, mem: str, gpus: int = 0, phase: str = "Running") -> dict:
    limits = {"cpu": cpu, "memory": mem, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"spec": {"nodeName": on, "containers": [{"resources": {"limits": limits}}]}, "status": {"phase": phase}}


def test_quantities() -> None:
    assert shapes.quantity("500m") == 0.5 and shapes.quantity("64Gi") == 64 * 2**30
    assert shapes.quantity("8") == 8 and shapes.quantity("1k") == 1000 and shapes.quantity("") == 0


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("NVIDIA-A100-SXM4-80GB", "A100"),
        ("nvidia-tesla-a100", "A100"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("nvidia-l4", "L4"),
        ("Tesla-T4", "T4"),
        ("NVIDIA-A10G", "A10G"),
        ("Weird/Chip 9", "WeirdChip9"),
    ],
)
def test_gpu_model_from_labels(label: str, name: str) -> None:
    assert gpu_model(label) == name


def test_shape_names_round_trip_and_sort_small_first() -> None:
    for shape in (shapes.Shape(4, 16), shapes.Shape(8, 64, 1, "A100"), shapes.Shape(128, 1024, 8, "H100")):
        assert shapes.parse_shape(shape.instance_type) == shape
    assert shapes.parse_shape("p4d.24xlarge") is None
    names = [shapes.Shape(c, 2 * c).instance_type for c in (16, 2, 4)]
    assert sorted(names) == [shapes.Shape(c, 2 * c).instance_type for c in (2, 4, 16)]
    assert shapes.Shape(64, 256).instance_type < shapes.Shape(1, 2, 1, "A100").instance_type  # CPU before GPU


def test_free_capacity_subtracts_running_pods_and_offers_count_what_fits() -> None:
    gpu_taint = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
    nodes = [node("g", "16", "64Gi", 4, "NVIDIA-A100-SXM4-80GB", [gpu_taint]), node("c", "4", "16Gi")]
    running = [pod("g", "4", "16Gi", 1), pod("g", "4", "16Gi", 1, phase="Succeeded"), pod("c", "1", "2Gi")]
    free = {n.name: n for n in shapes.free_nodes(nodes, running)}
    assert (free["g"].free_cpus, free["g"].free_memory_gib, free["g"].free_gpus) == (12, 48, 3)
    assert free["g"].gpu == "A100" and free["g"].gpu_label == ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB")
    assert free["c"].free_cpus == 3
    offers = {o.instance_type: o for o in shapes.offers("kubernetes", "ctx", list(free.values()), {})}
    one = offers["gpu01xA100-cpu004-mem0016g"]
    assert (one.accelerator_name, one.accelerator_count, one.max_instances, one.price_per_hour) == ("A100", 1, 3, 0)
    assert offers["gpu04xA100-cpu016-mem0064g"].max_instances == 1  # busy now, offered once (the cluster may free)
    # CPU-only pods do not tolerate the GPU taint: only node "c" (3 CPUs free) counts.
    assert offers["cpu001-mem0002g"].max_instances == 3
    assert "cpu008-mem0016g" not in offers  # no untainted node could ever hold 8 CPUs
    assert all(o.region == "ctx" and o.provider == "kubernetes" for o in offers.values())


def test_live_pods_count_within_the_cap_and_prices_apply() -> None:
    free = shapes.free_nodes([node("c", "4", "16Gi")], [pod("c", "2", "4Gi")])
    offers = shapes.offers("kubernetes", "ctx", free, {"cpu002-mem0004g": 1}, cpu_price=0.5)
    (two,) = [o for o in offers if o.instance_type == "cpu002-mem0004g"]
    assert two.max_instances == 2 and two.price_per_hour == 1.0


def test_not_ready_and_cordoned_nodes_are_skipped() -> None:
    cordoned = node("x", "4", "16Gi")
    cordoned["spec"]["unschedulable"] = True
    down = node("y", "4", "16Gi")
    down["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert shapes.free_nodes([cordoned, down], []) == []


def test_k8s_is_an_infra_alias() -> None:
    assert infra_parts("k8s/my-ctx") == ("kubernetes", "my-ctx", "")
    assert infra_parts("kubernetes") == ("kubernetes", "", "")


def request(node_id: str = "node-1") -> CreateRequest:
    offer = Offer("kubernetes", "ctx", "", "gpu01xA100-cpu004-mem0016g", 4, 16, "A100", 1)
    return CreateRequest(
        node_id,
        offer,
        False,
        {"styx-plane": "p1", "team": "ml/a b"},
        "req-1",
        AgentLaunch("10.0.0.1:1", "10.0.0.1:2", "shared-secret"),
    )


def test_pod_names_and_labels_are_valid_kubernetes_names() -> None:
    assert pods.pod_name("node-1a2b") == "styx-node-1a2b"
    odd = pods.pod_name("Node_X.y")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", odd) and odd != pods.pod_name("node-x-y")
    assert len(pods.pod_name("n" * 200)) <= 63
    labels = pods.labels_of(request(), shapes.Shape(4, 16, 1, "A100"))
    assert labels["styx-managed"] == "true" and labels["styx-node-id"] == "node-1" and labels["styx-plane"] == "p1"
    assert labels[pods.SHAPE_LABEL] == "gpu01xA100-cpu004-mem0016g"
    for key, value in labels.items():
        assert re.fullmatch(r"([A-Za-z0-9.\-]+/)?[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?", key), key
        assert re.fullmatch(r"([A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?)?", value), value


def test_pod_manifest_keeps_secrets_out_and_names_the_command() -> None:
    req = request()
    shape = shapes.Shape(4, 16, 1, "A100")
    name = pods.pod_name(req.node_id)
    secret = pods.secret_body(name, {}, req, "ctx", 1_700_000_000.0)
    assert secret["stringData"]["STYX_NODE_ID"] == "node-1" and "shared-secret" not in str(secret)
    body = pods.pod_body(
        name,
        {},
        req,
        shape,
        image="img:1",
        command="styx-agent",
        gpu_resource="nvidia.com/gpu",
        gpu_selector=("nvidia.com/gpu.product", "NVIDIA-A100"),
        env_keys=tuple(secret["stringData"]),
        instance_id="ctx/default/" + name,
    )
    text = str(body)
    assert "shared-secret" not in text and secret["stringData"]["STYX_JOIN_TOKEN"] not in text
    (c,) = body["spec"]["containers"]
    assert c["command"] == ["styx-agent"] and c["args"][:2] == ["--node-id", "node-1"]
    assert (
        c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    )
    assert body["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100"}
    assert body["spec"]["restartPolicy"] == "Never"


def test_tls_ca_is_mounted_from_the_secret() -> None:
    req = request()
    req = CreateRequest(req.node_id, req.offer, False, {}, "r", AgentLaunch("a:1", "b:2", "t", tls_ca_pem="PEM"))
    secret = pods.secret_body("s", {}, req, "ctx", 1_700_000_000.0)
    body = pods.pod_body("s", {}, req, shapes.Shape(1, 2), image="i", command="c", env_keys=tuple(secret["stringData"]))
    env = {e["name"]: e for e in body["spec"]["containers"][0]["env"]}
    assert env["STYX_TLS_CA"]["value"] == f"{pods.CA_DIR}/{pods.CA_KEY}" and pods.CA_KEY not in env
    assert body["spec"]["volumes"][0]["secret"]["secretName"] == "s"
