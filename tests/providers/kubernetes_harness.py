"""Contract harness for the Kubernetes provider: the official ``kubernetes`` client against
tests/fakes/k8s_api.py, a fake API server + kubelet speaking the core/v1 REST wire format
(no kube-apiserver can run here). Ground truth is the fake's own store of pods and secrets.
Pods run a sleeper instead of the agent (the contract's endpoints are not a real plane).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from fakes.k8s_api import FakeKubernetes, FakeNode
from styx.provider import Offer, Provider


class KubernetesHarness:
    """The Kubernetes provider pointed at a fresh fake cluster of one 4-CPU node."""

    name = "kubernetes"
    supports_spot = False

    def __init__(self, tmp_path: Path) -> None:
        from styx_plugins.kubernetes.provider import KubernetesProvider

        sleeper = tmp_path / "sleeper"
        sleeper.write_text("#!/bin/sh\nexec sleep 60\n")
        sleeper.chmod(0o755)
        self.fake = FakeKubernetes(
            [FakeNode("node-a", cpus=4, memory_gib=16)],
            tmp_path / "kubelet",
            base_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        ).start()
        config = self.fake.kubeconfig(tmp_path / "kubeconfig", {"ctx": "default"})
        env = {
            "STYX_K8S_KUBECONFIG": str(config),
            "STYX_K8S_AGENT_COMMAND": str(sleeper),
            "STYX_K8S_POLL_SECONDS": "0.05",
        }
        self._provider = KubernetesProvider(env=env)

    def provider(self) -> Provider:
        return self._provider

    def offer(self) -> Offer:
        return Offer("kubernetes", "ctx", "", "cpu001-mem0002g", 1, 2, max_instances=4)

    def live_instances(self) -> dict[str, str]:
        return {
            f"ctx/default/{p['metadata']['name']}": p["metadata"]["labels"]["styx-node-id"]
            for p in self.fake.pods("styx-managed=true")
        }

    def is_spot(self, instance_id: str) -> bool:
        return False

    def boot_env(self, instance_id: str) -> dict[str, str]:
        name = instance_id.rsplit("/", 1)[-1]
        (secret,) = [s for s in self.fake.secrets() if s["metadata"]["name"] == name]
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    def close(self) -> None:
        self.fake.close()


def make_harness(tmp_path: Path) -> KubernetesHarness:
    """Contract-suite entry point (see conftest.py); skips without the kubernetes client."""
    pytest.importorskip("kubernetes", reason="pip install 'styx[kubernetes]'")
    return KubernetesHarness(tmp_path)
