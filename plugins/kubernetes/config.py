"""Settings of the Kubernetes provider, read from the environment (and an optional file).

Nothing here imports the ``kubernetes`` client.

Environment (``STYX_K8S_CONFIG_FILE`` may hold any of them as YAML / JSON, ``image: x``):
- ``STYX_K8S_KUBECONFIG``: the kubeconfig file (default ``$KUBECONFIG``, else
  ``~/.kube/config``). Each of its contexts is a region (``infra: k8s/CONTEXT``).
  Without a kubeconfig, inside a pod (``KUBERNETES_SERVICE_HOST`` set), the in-cluster
  service account is used as the one region ``in-cluster``: its token, CA and namespace
  from ``STYX_K8S_SERVICE_ACCOUNT_DIR`` (default ``SERVICE_ACCOUNT_DIR``, where the
  kubelet mounts them).
- ``STYX_K8S_CONTEXTS``: only these contexts (comma-separated; default: all).
- ``STYX_K8S_NAMESPACE``: namespace of Styx pods (default: the context's, else ``default``).
- ``STYX_K8S_IMAGE``: the agent image (default ``DEFAULT_IMAGE``, built from deploy/ with
  ``--build-arg SERVICE=agent``); ``STYX_K8S_AGENT_COMMAND``: the container's command
  (default ``styx-agent``; the arguments are always set by the provider).
- ``STYX_K8S_GPU_LABEL``: a node label naming the GPU model, tried before
  ``nvidia.com/gpu.product`` and ``cloud.google.com/gke-accelerator``.
- ``STYX_K8S_PRICE_PER_GPU_HOUR`` / ``STYX_K8S_PRICE_PER_CPU_HOUR``: prices of offers
  (default 0: the cluster is already paid for).
- ``STYX_K8S_SCHEDULE_TIMEOUT_SECONDS`` (default 30): a pod unschedulable this long, or
  whose image cannot be pulled, fails the create so the broker tries the next offer;
  ``STYX_K8S_START_TIMEOUT_SECONDS`` (default 600): bound on a scheduled pod starting.
- ``STYX_K8S_POLL_SECONDS`` (default 1): how often a starting pod is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from styx import __version__
from styx.provider import ConfigError, ProviderConfig

__all__ = ["DEFAULT_IMAGE", "INSTALL_HINT", "IN_CLUSTER", "ConfigError", "KubeSettings"]

DEFAULT_IMAGE = f"styx-agent:{__version__}"
INSTALL_HINT = "pip install 'styx[kubernetes]'"
#: The region name of the in-cluster configuration.
IN_CLUSTER = "in-cluster"
PREFIX = "STYX_K8S_"
#: Where the kubelet mounts a pod's service account (token, ca.crt, namespace).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class KubeSettings:
    """Everything the provider reads from the environment."""

    kubeconfig: str
    contexts: tuple[str, ...]
    namespace: str
    image: str
    agent_command: str
    gpu_label: str
    gpu_price: float
    cpu_price: float
    schedule_timeout_s: float
    start_timeout_s: float
    poll_s: float
    in_cluster: bool
    service_account_dir: str
    #: The environment the settings came from (in-cluster config reads the service host from it).
    env: Mapping[str, str]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KubeSettings:
        """Read and validate the settings; ``ConfigError`` names a malformed one."""
        env = os.environ if env is None else env
        c = ProviderConfig.load(PREFIX, env)
        kubeconfig = c.get("STYX_K8S_KUBECONFIG") or str(env.get("KUBECONFIG", "")).split(os.pathsep)[0]
        kubeconfig = kubeconfig or str(Path("~/.kube/config").expanduser())
        in_cluster = not Path(kubeconfig).expanduser().is_file() and bool(env.get("KUBERNETES_SERVICE_HOST"))
        return cls(
            kubeconfig=str(Path(kubeconfig).expanduser()),
            contexts=tuple(c.csv("STYX_K8S_CONTEXTS")),
            namespace=c.get("STYX_K8S_NAMESPACE"),
            image=c.get("STYX_K8S_IMAGE", DEFAULT_IMAGE),
            agent_command=c.get("STYX_K8S_AGENT_COMMAND", "styx-agent"),
            gpu_label=c.get("STYX_K8S_GPU_LABEL"),
            gpu_price=c.number("STYX_K8S_PRICE_PER_GPU_HOUR", 0.0),
            cpu_price=c.number("STYX_K8S_PRICE_PER_CPU_HOUR", 0.0),
            schedule_timeout_s=c.number("STYX_K8S_SCHEDULE_TIMEOUT_SECONDS", 30.0, positive=True),
            start_timeout_s=c.number("STYX_K8S_START_TIMEOUT_SECONDS", 600.0, positive=True),
            poll_s=c.number("STYX_K8S_POLL_SECONDS", 1.0, positive=True),
            in_cluster=in_cluster,
            service_account_dir=c.get("STYX_K8S_SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR),
            env=dict(env),
        )
