"""The objects a Styx node is made of on Kubernetes: a Secret and a Pod (wire-format dicts).

- The **Secret** ``styx-<node>`` holds the agent's settings from the kit's boot helper
  (``styx.provider.boot.agent_env``: control-plane endpoints and a join token scoped to
  this node, never the plane's shared token), plus the TLS CA when there is one.
- The **Pod** ``styx-<node>`` runs the agent: ``command`` and ``args`` are named explicitly
  (not left to the image's entrypoint); every setting comes from the Secret through
  ``secretKeyRef`` (no secret is a literal in the pod spec); ``STYX_AGENT_ADDRESS`` is the
  pod's IP (downward API), what other ranks of a gang dial. Requests = limits for cpu,
  memory and the GPU resource (Guaranteed QoS, whole GPUs); a nodeSelector pins the GPU
  model; GPU taints are tolerated. ``restartPolicy: Never``: a dead agent is a lost node,
  which the broker replaces, rather than a restarted one holding stale state.

Both carry the Styx labels (``styx.provider.tags`` under Kubernetes' label rules) and the
shape label the offers count live pods by.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from styx.provider import CreateRequest, TagRules, TextRule, digest, instance_tags
from styx.provider.boot import agent_env
from styx_plugins.kubernetes.shapes import Shape

#: Label of the pod's shape (its offer's instance type).
SHAPE_LABEL = "styx-shape"
#: Label of the kubeconfig context that made the pod: two contexts may reach one cluster
#: and namespace, and each must list only its own pods (else one pod shows under two ids).
CONTEXT_LABEL = "styx-context"
#: Label keys: a DNS-1123 prefix "/" and a name of at most 63 characters; values: at most
#: 63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric ("" allowed).
K8S_LABELS = TagRules(
    key=TextRule(max_len=63, invalid=r"[^A-Za-z0-9_.\-/]", strip="-_./", hash_long="-", keep=52, digest_len=10),
    value=TextRule(max_len=63, invalid=r"[^A-Za-z0-9_.\-]", strip="-_.", hash_long="-", keep=52, digest_len=10),
    reserved_prefixes=("kubernetes.io/", "k8s.io/"),
)
_CONTAINER = "agent"
#: The Secret key of the control plane's TLS CA, mounted at ``CA_DIR``.
CA_KEY = "ca.pem"
CA_DIR = "/etc/styx/tls"


def pod_name(node_id: str) -> str:
    """``styx-<node id>`` as a DNS-1123 name (lower case; a hash keeps distinct ids apart)."""
    base = re.sub(r"[^a-z0-9-]", "-", node_id.lower()).strip("-")
    if base == node_id and len(base) <= 57:
        return f"styx-{base}"
    return f"styx-{base[:40].strip('-')}-{digest(node_id, 10)}"


def context_label(context: str) -> str:
    """``context`` as a label value."""
    return K8S_LABELS.value.apply(context)


def labels_of(request: CreateRequest, shape: Shape, context: str = "") -> dict[str, str]:
    """The labels of the node's pod and secret."""
    tags = instance_tags(request.node_id, request.request_id, request.labels, K8S_LABELS)
    return {**tags, SHAPE_LABEL: shape.instance_type, CONTEXT_LABEL: context_label(context or request.offer.region)}


#: Annotation on a node's Secret: when (epoch seconds, provider clock) it was last written.
#: A replace keeps ``creationTimestamp``, so orphan collection goes by this instead.
WRITTEN_AT = "styx.dev/written-at"


def secret_body(
    name: str, labels: Mapping[str, str], request: CreateRequest, context: str, written_at: float
) -> dict[str, Any]:
    """The Secret with the agent's settings."""
    env = agent_env("kubernetes", request, region=context)
    if request.agent_launch.tls_ca_pem:
        env[CA_KEY] = request.agent_launch.tls_ca_pem  # mounted as a file (see pod_body)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": dict(labels), "annotations": {WRITTEN_AT: f"{written_at:.0f}"}},
        "type": "Opaque",
        "stringData": env,
    }


def pod_body(
    name: str,
    labels: Mapping[str, str],
    request: CreateRequest,
    shape: Shape,
    *,
    image: str,
    command: str,
    gpu_resource: str = "",
    gpu_selector: tuple[str, str] = ("", ""),
    env_keys: tuple[str, ...] = (),
    instance_id: str = "",
) -> dict[str, Any]:
    """The agent's Pod; ``env_keys``: the Secret's keys, each passed by ``secretKeyRef``."""
    amounts: dict[str, str] = {"cpu": str(shape.cpus), "memory": f"{shape.memory_gib}Gi"}
    if shape.gpus:
        amounts[gpu_resource or "nvidia.com/gpu"] = str(shape.gpus)
    env: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
        for key in sorted(env_keys)
        if key != CA_KEY
    ]
    env += [
        {"name": "STYX_AGENT_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "STYX_INSTANCE_ID", "value": instance_id},
        {"name": "STYX_AGENT_CPUS", "value": str(shape.cpus)},
        {"name": "STYX_AGENT_MEMORY_GIB", "value": str(shape.memory_gib)},
    ]
    args = [
        "--node-id",
        request.node_id,
        "--provider",
        "kubernetes",
        "--region",
        request.offer.region,
        "--instance-type",
        shape.instance_type,
    ]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the agent needs no Kubernetes credentials
        "containers": [
            {
                "name": _CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": [command],
                "args": args,
                "env": env,
                "resources": {"requests": dict(amounts), "limits": dict(amounts)},
            }
        ],
    }
    if CA_KEY in env_keys:
        env.append({"name": "STYX_TLS_CA", "value": f"{CA_DIR}/{CA_KEY}"})
        spec["volumes"] = [
            {"name": "styx-tls", "secret": {"secretName": name, "items": [{"key": CA_KEY, "path": CA_KEY}]}}
        ]
        spec["containers"][0]["volumeMounts"] = [{"name": "styx-tls", "mountPath": CA_DIR, "readOnly": True}]
    if shape.gpus:
        key, value = gpu_selector
        if key:
            spec["nodeSelector"] = {key: value}
        spec["tolerations"] = [
            {"key": resource, "operator": "Exists", "effect": "NoSchedule"}
            for resource in ("nvidia.com/gpu", "amd.com/gpu")
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": dict(labels)}, "spec": spec}
