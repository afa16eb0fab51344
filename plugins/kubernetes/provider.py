"""The Kubernetes provider: a Styx node is a pod running the agent (official ``kubernetes`` client).

Regions are kubeconfig contexts (``infra: k8s/CONTEXT``; ``k8s`` alone: any), or the one
region ``in-cluster`` when the provisioner runs in a pod without a kubeconfig. Offers are
pod shapes computed from the live cluster (``shapes.py``); the pod and its Secret are
built in ``pods.py``; settings in ``config.py``.

``create`` makes the Secret, then the Pod (names from the node id, so a retried create
finds them: a pod already carrying this request's label is waited for, not made again),
then waits for the pod to run. It fails fast instead of waiting out a long timeout: a pod
still unschedulable (``PodScheduled=False``) after ``STYX_K8S_SCHEDULE_TIMEOUT_SECONDS``
fails with the scheduler's message, and so does an image that cannot be pulled. Both are
raised as QUOTA errors, the kind whose cooldown covers the offer's whole region, i.e. the
context: a cluster that cannot schedule one shape now should not be tried with each of
its other shapes (nor with the same unpullable image) before the next context or
provider. The pod and Secret are deleted first, and the broker tries the next offer.

Instance ids are ``CONTEXT/NAMESPACE/POD``. ``terminate`` deletes the pod and its Secret;
``list_instances`` lists Styx-labelled pods of every context, so the reconciler deletes
the ones no record owns; it also deletes node Secrets that have had no pod
for ``ORPHAN_SECRET_AGE_S`` (a crash between the Secret and the Pod), which no instance
record can own.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from styx.common.clock import Clock
from styx.provider import (
    PLANE_LABEL,
    TAG_MANAGED,
    TAG_NODE,
    TAG_REQUEST,
    CachedCheck,
    Capabilities,
    ConfigError,
    CreateRequest,
    Offer,
    ProviderBase,
    ProviderError,
    ProviderErrorKind,
    ProviderInstance,
    ProviderStatus,
    clip,
    hookimpl,
)
from styx_plugins.kubernetes import pods, podstate, shapes
from styx_plugins.kubernetes.config import IN_CLUSTER, INSTALL_HINT, KubeSettings

log = logging.getLogger(__name__)

NAME = "kubernetes"
MANAGED = f"{TAG_MANAGED}=true"
# Seconds one API call may take (a dead API server must not stall the reconcile loop).
_CALL_TIMEOUT_S = 10.0
_PROBE_TIMEOUT_S = 3.0
# A node Secret with no pod of its name, last written longer ago than this, is an orphan
# (a provisioner died between the Secret and the Pod and no retry came): far above the
# few milliseconds between the two creates, and a late retry writes the Secret again.
ORPHAN_SECRET_AGE_S = 300.0


class KubernetesProvider(ProviderBase):
    """Creates Styx nodes as pods. Thread-safe: one API client per context, stateless calls."""

    name = NAME
    capabilities = Capabilities(multi_node=True)

    def __init__(self, env: Mapping[str, str] | None = None, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._env = env
        self._lock = threading.RLock()
        self._settings: KubeSettings | None = None
        self._apis: dict[str, Any] = {}
        self._check = CachedCheck(self._probe, ok_ttl_s=15.0, fail_ttl_s=5.0, clock=self.clock)

    # -- configuration ---------------------------------------------------------------

    @property
    def settings(self) -> KubeSettings:
        """The provider's settings (read on first use)."""
        with self._lock:
            if self._settings is None:
                self._settings = KubeSettings.from_env(self._env)
            return self._settings

    def contexts(self) -> dict[str, str]:
        """Context -> namespace of every context Styx uses; ``ConfigError`` when there are none."""
        s = self.settings
        if s.in_cluster:
            return {IN_CLUSTER: s.namespace or _in_cluster_namespace(s.service_account_dir)}
        if not os.path.isfile(s.kubeconfig):
            # Checked before importing the client (about a second of CPU), which every
            # provisioner without a cluster would otherwise pay on each check.
            raise ConfigError(
                f"no kubeconfig at {s.kubeconfig}",
                "set STYX_K8S_KUBECONFIG (or KUBECONFIG) to a kubeconfig file, or run in a pod",
            )
        from kubernetes import config

        try:
            listed, _ = config.list_kube_config_contexts(s.kubeconfig)
        except (config.ConfigException, OSError) as exc:
            raise ConfigError(
                f"no usable kubeconfig at {s.kubeconfig} ({clip(str(exc), 120)})",
                "set STYX_K8S_KUBECONFIG (or KUBECONFIG) to a kubeconfig file",
            ) from None
        found = {c["name"]: (c.get("context") or {}).get("namespace") or "default" for c in listed or []}
        for wanted in s.contexts:
            if wanted not in found:
                raise ConfigError(
                    f"STYX_K8S_CONTEXTS: context {wanted!r} is not in {s.kubeconfig}",
                    f"use one of: {', '.join(sorted(found)) or 'none'}",
                )
        chosen = list(s.contexts) or sorted(found)
        return {c: s.namespace or found[c] for c in chosen}

    def api(self, context: str) -> Any:
        """The CoreV1Api of ``context`` (built once)."""
        with self._lock:
            if context in self._apis:
                return self._apis[context]
            from kubernetes import client, config

            cfg = client.Configuration()
            s = self.settings
            if context == IN_CLUSTER and s.in_cluster:
                from kubernetes.config.incluster_config import InClusterConfigLoader

                sa = Path(s.service_account_dir)
                try:
                    InClusterConfigLoader(str(sa / "token"), str(sa / "ca.crt"), environ=s.env).load_and_set(cfg)
                except config.ConfigException as exc:
                    raise ConfigError(
                        f"in-cluster config: {clip(str(exc), 160)}",
                        f"mount a service account token at {sa} (or set STYX_K8S_KUBECONFIG)",
                    ) from None
            else:
                config.load_kube_config(self.settings.kubeconfig, context=context, client_configuration=cfg)
            cfg.retries = 1  # fail over quickly from a dead API server instead of retrying 3x
            self._apis[context] = client.CoreV1Api(client.ApiClient(cfg))
            return self._apis[context]

    def _namespace(self, context: str) -> str:
        contexts = self.contexts()
        if context not in contexts:
            known = ", ".join(sorted(contexts)) or "none"
            raise ProviderError(ProviderErrorKind.INVALID, f"unknown kubernetes context {context!r}; contexts: {known}")
        return contexts[context]

    # -- Provider interface --------------------------------------------------------------

    def check(self) -> ProviderStatus:
        """Client installed, a kubeconfig with contexts, and which contexts answer (and why not)."""
        try:
            if importlib.util.find_spec("kubernetes") is None:
                return ProviderStatus(False, "the kubernetes client is not installed", INSTALL_HINT)
            return self._check()
        except Exception as exc:  # check() must never raise
            return ProviderStatus(False, f"check failed: {type(exc).__name__}", "see the provisioner log")

    def _probe(self) -> ProviderStatus:
        try:
            contexts = self.contexts()
        except ConfigError as exc:
            return ProviderStatus(False, exc.reason, exc.hint)
        if not contexts:
            return ProviderStatus(False, f"no contexts in {self.settings.kubeconfig}", "add a context (kubectl config)")
        parts, ok = [], []
        for context, namespace in contexts.items():
            why = self._reach(context, namespace)
            parts.append(f"{context}: {why or 'reachable' + self._gpu_summary(context)}")
            if not why:
                ok.append(context)
        summary = "; ".join(parts)
        if not ok:
            return ProviderStatus(False, clip(summary), "check the kubeconfig's server addresses and credentials")
        return ProviderStatus(True, clip(summary))

    def _reach(self, context: str, namespace: str) -> str:
        """ "" when ``context`` answers, else why not (one line)."""
        try:
            self.api(context).list_namespaced_pod(namespace, limit=1, _request_timeout=_PROBE_TIMEOUT_S)
        except Exception as exc:
            return podstate.why(exc, self._server(context))
        return ""

    def _gpu_summary(self, context: str) -> str:
        """ ", A100 3/4 free" for a reachable context's GPUs ("" without GPUs or on error)."""
        try:
            per = self.free_gpus([context])[context]
        except Exception:
            return ""
        return "".join(f", {model} {free}/{total} free" for model, (free, total) in sorted(per.items()))

    def _server(self, context: str) -> str:
        try:
            return str(self.api(context).api_client.configuration.host)
        except Exception:
            return "its API server"

    def offers(self) -> list[Offer]:
        """Pod shapes of every reachable context (see shapes.py); unreachable ones are skipped."""
        s = self.settings
        out: list[Offer] = []
        for context in self.contexts():
            try:
                nodes, live = self._cluster(context)
            except Exception as exc:
                log.warning("kubernetes context %s: no offers (%s)", context, podstate.why(exc, self._server(context)))
                continue
            out.extend(shapes.offers(NAME, context, nodes, live, s.gpu_price, s.cpu_price))
        return out

    def free_gpus(self, contexts: list[str] | None = None) -> dict[str, dict[str, tuple[int, int]]]:
        """Context -> GPU model -> (free now, total) over the context's nodes."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for context in contexts if contexts is not None else self.contexts():
            nodes, _ = self._cluster(context)
            per: dict[str, tuple[int, int]] = {}
            for n in nodes:
                if n.gpu:
                    free, total = per.get(n.gpu, (0, 0))
                    per[n.gpu] = (free + max(n.free_gpus, 0), total + n.gpus)
            out[context] = per
        return out

    def _cluster(self, context: str) -> tuple[list[shapes.NodeFree], dict[str, int]]:
        api = self.api(context)
        nodes = api.list_node(_request_timeout=_CALL_TIMEOUT_S)
        all_pods = api.list_pod_for_all_namespaces(_request_timeout=_CALL_TIMEOUT_S)
        wire = api.api_client.sanitize_for_serialization
        pod_dicts = [wire(p) for p in all_pods.items]
        free = shapes.free_nodes([wire(n) for n in nodes.items], pod_dicts, self.settings.gpu_label)
        live = Counter(
            (p["metadata"].get("labels") or {}).get(pods.SHAPE_LABEL, "")
            for p in pod_dicts
            if (p["metadata"].get("labels") or {}).get(TAG_MANAGED) == "true"
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
        return free, dict(live)

    def create_instance(self, request: CreateRequest) -> str:
        """Create (or find again) the node's Secret and Pod and wait until the pod runs."""
        offer = request.offer
        shape = shapes.parse_shape(offer.instance_type)
        if shape is None:
            raise ProviderError(
                ProviderErrorKind.INVALID,
                f"{offer.instance_type!r} is not a kubernetes pod shape; pick one from offers",
            )
        context = offer.region or next(iter(self.contexts()), "")
        namespace = self._namespace(context)
        api = self.api(context)
        name = pods.pod_name(request.node_id)
        labels = pods.labels_of(request, shape, context)
        where = f"k8s/{context}"
        existing = self._read_pod(api, name, namespace)
        if existing is not None:
            if (existing.metadata.labels or {}).get(TAG_REQUEST) != labels[TAG_REQUEST]:
                raise ProviderError(ProviderErrorKind.INVALID, f"pod {namespace}/{name} already exists in {where}")
        else:
            self._create(api, request, shape, context, namespace, name, labels)
        instance_id = f"{context}/{namespace}/{name}"
        try:
            self._wait_running(api, name, namespace, where)
        except ProviderError:
            self._delete(api, name, namespace)
            raise
        log.info("kubernetes pod running", extra={"node_id": request.node_id, "pod": instance_id})
        return instance_id

    def _create(
        self,
        api: Any,
        request: CreateRequest,
        shape: shapes.Shape,
        context: str,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
    ) -> None:
        gpu_resource, selector = "", ("", "")
        if shape.gpus:
            nodes, _ = self._cluster(context)
            of_model = [n for n in nodes if n.gpu == shape.gpu]
            if not of_model:
                raise ProviderError(
                    ProviderErrorKind.CAPACITY, f"k8s/{context} has no node with {shape.gpu} GPUs (any more)"
                )
            best = max(of_model, key=lambda n: (n.free_gpus, n.name))
            gpu_resource, selector = best.gpu_resource, best.gpu_label
        secret = pods.secret_body(name, labels, request, context, self.clock.now())
        image = self.settings.image
        body = pods.pod_body(
            name,
            labels,
            request,
            shape,
            image=image,
            command=self.settings.agent_command,
            gpu_resource=gpu_resource,
            gpu_selector=selector,
            env_keys=tuple(secret["stringData"]),
            instance_id=f"{context}/{namespace}/{name}",
        )
        from kubernetes.client.exceptions import ApiException

        try:
            try:
                api.create_namespaced_secret(namespace, secret, _request_timeout=_CALL_TIMEOUT_S)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                api.replace_namespaced_secret(name, namespace, secret, _request_timeout=_CALL_TIMEOUT_S)
            api.create_namespaced_pod(namespace, body, _request_timeout=_CALL_TIMEOUT_S)
        except Exception as exc:
            self._delete(api, name, namespace)
            raise podstate.error(exc, f"create pod {namespace}/{name} in k8s/{context}", self._server(context)) from exc

    def _wait_running(self, api: Any, name: str, namespace: str, where: str) -> None:
        s = self.settings
        started = self.clock.monotonic()
        wake = threading.Event()
        while True:
            pod = self._read_pod(api, name, namespace)
            if pod is None:
                raise ProviderError(ProviderErrorKind.INTERNAL, f"pod {namespace}/{name} vanished while starting")
            phase = pod.status.phase if pod.status else ""
            if phase == "Running":
                return
            if phase in ("Succeeded", "Failed"):
                raise ProviderError(
                    ProviderErrorKind.INTERNAL, f"pod {namespace}/{name} in {where} exited at start ({phase})"
                )
            waited = self.clock.monotonic() - started
            image_error = podstate.image_error(pod)
            if image_error:
                raise ProviderError(
                    ProviderErrorKind.QUOTA,
                    f"{where}: image {s.image!r} cannot be pulled ({image_error}); set STYX_K8S_IMAGE to an image "
                    "the cluster can pull",
                )
            unscheduled = podstate.unschedulable(pod)
            if unscheduled is not None and waited >= s.schedule_timeout_s:
                message = self._scheduler_message(api, name, namespace) or unscheduled
                raise ProviderError(
                    ProviderErrorKind.QUOTA,
                    f"{where}: pod unschedulable for {s.schedule_timeout_s:g} s: {clip(message, 300)}",
                )
            if waited >= s.start_timeout_s:
                raise ProviderError(
                    ProviderErrorKind.INTERNAL, f"{where}: pod {name} not running after {s.start_timeout_s:g} s"
                )
            self.clock.wait(wake, s.poll_s)

    def _scheduler_message(self, api: Any, name: str, namespace: str) -> str:
        try:
            events = api.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name}", _request_timeout=_CALL_TIMEOUT_S
            )
        except Exception:
            return ""
        failed = [e for e in events.items if e.reason == "FailedScheduling"]
        return str(failed[-1].message or "") if failed else ""

    def terminate(self, instance_id: str) -> None:
        """Delete the pod and its Secret; a pod that is gone already is fine."""
        context, namespace, name = _split_id(instance_id)
        api = self.api(context)
        pod = self._read_pod(api, name, namespace)
        if pod is not None and (pod.metadata.labels or {}).get(TAG_MANAGED) != "true":
            raise ProviderError(ProviderErrorKind.INVALID, f"pod {namespace}/{name} is not labelled {MANAGED}")
        self._delete(api, name, namespace, strict=True)

    def list_instances(self) -> list[ProviderInstance]:
        """Styx-labelled pods of every context. An unreachable context raises (INTERNAL): its
        pods are unknown, not gone, and must not be taken for lost nodes."""
        out = []
        for context, namespace in self.contexts().items():
            api = self.api(context)
            try:
                listed = api.list_namespaced_pod(namespace, label_selector=MANAGED, _request_timeout=_CALL_TIMEOUT_S)
            except Exception as exc:
                raise podstate.error(exc, f"list pods in k8s/{context}", self._server(context)) from exc
            self._collect_orphan_secrets(api, context, namespace, {p.metadata.name for p in listed.items})
            for pod in listed.items:
                labels = pod.metadata.labels or {}
                if labels.get(pods.CONTEXT_LABEL, pods.context_label(context)) != pods.context_label(context):
                    continue  # another context's pod in a cluster both reach: listed under that one
                out.append(
                    ProviderInstance(
                        f"{context}/{namespace}/{pod.metadata.name}",
                        labels.get(TAG_NODE, ""),
                        podstate.status_of(pod),
                        labels.get(PLANE_LABEL, ""),
                    )
                )
        return out

    # -- helpers -------------------------------------------------------------------------

    def _collect_orphan_secrets(self, api: Any, context: str, namespace: str, pod_names: set[str]) -> None:
        """Delete this context's Styx node Secrets that have had no pod for a while.

        Best effort: a Secret that cannot be listed or deleted now is tried next pass. Any
        plane's orphan goes: a Secret without its pod serves nobody, and a create that comes
        back for it later writes it again (``_create`` replaces or creates it).
        """
        try:
            listed = api.list_namespaced_secret(namespace, label_selector=MANAGED, _request_timeout=_CALL_TIMEOUT_S)
        except Exception as exc:
            log.warning("kubernetes context %s: cannot list secrets (%s)", context, podstate.why(exc, ""))
            return
        now = self.clock.now()
        for secret in listed.items:
            meta = secret.metadata
            labels = meta.labels or {}
            if meta.name in pod_names or labels.get(pods.CONTEXT_LABEL, pods.context_label(context)) != (
                pods.context_label(context)
            ):
                continue
            try:
                written = float((meta.annotations or {}).get(pods.WRITTEN_AT, ""))
            except ValueError:
                written = 0.0  # no stamp (written by hand): old
            if now - written < ORPHAN_SECRET_AGE_S:
                continue
            log.info("deleting orphan node secret", extra={"secret": f"{context}/{namespace}/{meta.name}"})
            try:
                api.delete_namespaced_secret(meta.name, namespace, _request_timeout=_CALL_TIMEOUT_S)
            except Exception as exc:
                log.warning("could not delete orphan secret %s/%s: %s", namespace, meta.name, exc)

    def _read_pod(self, api: Any, name: str, namespace: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return api.read_namespaced_pod(name, namespace, _request_timeout=_CALL_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise podstate.error(exc, f"read pod {namespace}/{name}", "") from exc
        except Exception as exc:
            raise podstate.error(exc, f"read pod {namespace}/{name}", self._server_of(api)) from exc

    @staticmethod
    def _server_of(api: Any) -> str:
        return str(getattr(api.api_client.configuration, "host", ""))

    def _delete(self, api: Any, name: str, namespace: str, strict: bool = False) -> None:
        """Delete the pod and its Secret (404 is success); ``strict``: raise on other errors."""
        from kubernetes.client.exceptions import ApiException

        for delete in (api.delete_namespaced_pod, api.delete_namespaced_secret):
            try:
                delete(name, namespace, grace_period_seconds=0, _request_timeout=_CALL_TIMEOUT_S)
            except ApiException as exc:
                if exc.status != 404 and strict:
                    raise podstate.error(exc, f"delete {namespace}/{name}", "") from exc
            except Exception as exc:
                if strict:
                    raise podstate.error(exc, f"delete {namespace}/{name}", self._server_of(api)) from exc
                log.warning("could not delete %s/%s; the reconciler will: %s", namespace, name, exc)


def _split_id(instance_id: str) -> tuple[str, str, str]:
    parts = instance_id.rsplit("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ProviderError(ProviderErrorKind.INVALID, f"{instance_id!r} is not a kubernetes instance id (CTX/NS/POD)")
    return parts[0], parts[1], parts[2]


def _in_cluster_namespace(service_account_dir: str) -> str:
    try:
        with open(Path(service_account_dir) / "namespace") as fh:
            return fh.read().strip() or "default"
    except OSError:
        return "default"


@hookimpl
def styx_provider() -> KubernetesProvider:
    """Contribute the Kubernetes provider (configured from the environment, client imported lazily)."""
    return KubernetesProvider()
