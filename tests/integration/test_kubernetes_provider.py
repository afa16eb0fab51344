"""The Kubernetes provider in-process: the official client against tests/fakes/k8s_api.py
(a fake API server + kubelet; no kube-apiserver runs here). Failure paths: unschedulable
(timed by an injected FakeClock, no wall-clock wait), an image that cannot be pulled, an
unknown context, a pod name taken by another request, an unreachable API server."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fakes.k8s_api import FakeKubernetes, FakeNode
from helpers import free_port, wait_until
from styx.common.clock import FakeClock
from styx.provider import AgentLaunch, ProviderError, ProviderErrorKind

pytest.importorskip("kubernetes", reason="pip install 'styx[kubernetes]'")

from styx_plugins.kubernetes.provider import KubernetesProvider

LAUNCH = AgentLaunch("127.0.0.1:1", "127.0.0.1:2", "shared")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeKubernetes]:
    nodes = [FakeNode("n1", cpus=4, memory_gib=16, gpus=2, gpu_product="NVIDIA-L4")]
    fake = FakeKubernetes(nodes, tmp_path / "kubelet", base_env={"PATH": os.environ["PATH"]}).start()
    fake.kubeconfig(tmp_path / "kubeconfig", {"a": "default", "b": "default"})
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n")
    sleeper.chmod(0o755)
    try:
        yield fake
    finally:
        fake.close()


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "STYX_K8S_KUBECONFIG": str(tmp_path / "kubeconfig"),
        "STYX_K8S_AGENT_COMMAND": str(tmp_path / "sleeper"),
        "STYX_K8S_POLL_SECONDS": "0.05",
        **extra,
    }


def offer_of(provider: KubernetesProvider, instance_type: str, region: str = "a"):
    return next(o for o in provider.offers() if o.instance_type == instance_type and o.region == region)


def create(provider: KubernetesProvider, offer, node_id: str = "node-1", request_id: str = "req-1") -> str:
    return provider.create(
        node_id=node_id, offer=offer, spot=False, labels={}, request_id=request_id, agent_launch=LAUNCH
    )


def test_unschedulable_pod_fails_after_the_timeout_on_the_injected_clock(
    cluster: FakeKubernetes, tmp_path: Path
) -> None:
    clock = FakeClock()
    provider = KubernetesProvider(env=env(tmp_path), clock=clock)
    offer = offer_of(provider, "gpu01xL4-cpu002-mem0008g")
    cluster.nodes[0].taints = [{"key": "maintenance", "effect": "NoSchedule"}]
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: outcome.append(_raises(lambda: create(provider, offer))))
    thread.start()
    wait_until(lambda: cluster.pods() and cluster.pods()[0]["status"]["conditions"], timeout=10, message="pending")
    # Fake time moves in small steps; the create gives up once 30 fake seconds have passed.
    while thread.is_alive() and clock.monotonic() < 120:
        if clock.monotonic() < 29.5:
            assert cluster.pods(), "deleted before the timeout"
        clock.advance(0.5)
        thread.join(0.02)
    thread.join(10)
    assert clock.monotonic() >= 30, clock.monotonic()
    (error,) = outcome
    assert isinstance(error, ProviderError) and error.kind is ProviderErrorKind.QUOTA
    assert (
        "k8s/a: pod unschedulable for 30 s: 0/1 nodes are available: 1 node(s) had untolerated taint" in error.message
    )
    assert cluster.pods() == [] and cluster.secrets() == []  # nothing half-created


def _raises(fn) -> BaseException | None:
    try:
        fn()
    except BaseException as exc:
        return exc
    return None


def test_image_that_cannot_be_pulled_fails_fast_and_cleans_up(cluster: FakeKubernetes, tmp_path: Path) -> None:
    cluster.unpullable.add("registry.invalid/styx:1")
    provider = KubernetesProvider(env=env(tmp_path, STYX_K8S_IMAGE="registry.invalid/styx:1"))
    with pytest.raises(ProviderError) as caught:
        create(provider, offer_of(provider, "cpu001-mem0002g"))
    assert caught.value.kind is ProviderErrorKind.QUOTA
    assert "image 'registry.invalid/styx:1' cannot be pulled (ImagePullBackOff" in caught.value.message
    assert "STYX_K8S_IMAGE" in caught.value.message
    assert cluster.pods() == [] and cluster.secrets() == []


def test_create_is_idempotent_and_a_name_taken_by_another_request_is_refused(
    cluster: FakeKubernetes, tmp_path: Path
) -> None:
    provider = KubernetesProvider(env=env(tmp_path))
    offer = offer_of(provider, "cpu001-mem0002g", region="b")
    first = create(provider, offer)
    assert first == "b/default/styx-node-1" and create(provider, offer) == first
    assert len(cluster.pods()) == 1
    with pytest.raises(ProviderError) as caught:
        create(provider, offer, request_id="req-other")
    assert caught.value.kind is ProviderErrorKind.INVALID and "already exists" in caught.value.message
    assert {i.instance_id for i in provider.list_instances()} == {first}  # a and b share the fake's namespace
    provider.terminate(first)
    assert cluster.pods() == [] and cluster.secrets() == []


def test_unknown_context_is_named_with_the_known_ones(cluster: FakeKubernetes, tmp_path: Path) -> None:
    provider = KubernetesProvider(env=env(tmp_path))
    offer = offer_of(provider, "cpu001-mem0002g")
    with pytest.raises(ProviderError) as caught:
        create(provider, replace(offer, region="nope"))
    assert caught.value.kind is ProviderErrorKind.INVALID
    assert caught.value.message == "unknown kubernetes context 'nope'; contexts: a, b"
    configured = KubernetesProvider(env=env(tmp_path, STYX_K8S_CONTEXTS="a,zzz")).check()
    assert not configured.enabled and "'zzz' is not in" in configured.reason and "a, b" in configured.hint
    assert cluster.pods() == []


def test_unreachable_api_server(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dead",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "c", "user": "u"}}],
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(doc))
    provider = KubernetesProvider(env=env(tmp_path))
    status = provider.check()
    assert not status.enabled and status.reason.startswith("dead: cannot reach http://127.0.0.1:")
    assert provider.offers() == []
    with pytest.raises(ProviderError) as caught:
        provider.list_instances()  # unknown is not gone: the reconciler must not drop its nodes
    assert caught.value.kind is ProviderErrorKind.INTERNAL and "cannot reach" in caught.value.message


def test_a_leftover_secret_is_rewritten(cluster: FakeKubernetes, tmp_path: Path) -> None:
    """A provisioner killed between the Secret and the Pod leaves the Secret: the retry rewrites it."""
    provider = KubernetesProvider(env=env(tmp_path))
    api = provider.api("a")
    api.create_namespaced_secret("default", {"metadata": {"name": "styx-node-9"}, "stringData": {"STALE": "1"}})
    instance = create(provider, offer_of(provider, "cpu001-mem0002g"), node_id="node-9", request_id="req-9")
    (secret,) = cluster.secrets()
    assert "STALE" not in secret["data"] and "STYX_JOIN_TOKEN" in secret["data"]
    provider.terminate(instance)


def test_fake_serves_list_and_watch_to_the_official_client(cluster: FakeKubernetes, tmp_path: Path) -> None:
    """The fake's wire format as the client parses it: list resourceVersion, watch events, 404 Status."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    provider = KubernetesProvider(env=env(tmp_path))
    api = provider.api("a")
    listed = api.list_namespaced_pod("default")
    instance = create(provider, offer_of(provider, "cpu001-mem0002g"))
    seen = []
    for event in watch.Watch().stream(
        api.list_namespaced_pod, "default", resource_version=listed.metadata.resource_version, timeout_seconds=5
    ):
        seen.append((event["type"], event["object"].status.phase))
        if event["object"].status.phase == "Running":
            break
    assert seen[0] == ("ADDED", "Pending") and seen[-1] == ("MODIFIED", "Running")
    provider.terminate(instance)
    with pytest.raises(ApiException) as caught:
        api.read_namespaced_pod("styx-node-1", "default")
    assert caught.value.status == 404 and json.loads(caught.value.body)["reason"] == "NotFound"


def test_an_orphan_secret_is_collected_once_it_is_old_and_podless(cluster: FakeKubernetes, tmp_path: Path) -> None:
    """A provisioner killed between a node's Secret and its Pod, with no retry coming, left a
    Secret no instance record owns: the reconciler's listing deletes it after a grace period
    (on the injected clock), and never touches a Secret whose pod exists."""
    from styx.provider import CreateRequest
    from styx_plugins.kubernetes import pods, shapes

    clock = FakeClock()
    provider = KubernetesProvider(env=env(tmp_path), clock=clock)
    offer = offer_of(provider, "cpu001-mem0002g")
    running = create(provider, offer, node_id="node-1", request_id="req-1")
    request = CreateRequest("node-2", offer, False, {}, "req-2", LAUNCH)
    shape = shapes.parse_shape(offer.instance_type)
    assert shape is not None
    body = pods.secret_body("styx-node-2", pods.labels_of(request, shape, "a"), request, "a", clock.now())
    provider.api("a").create_namespaced_secret("default", body)
    assert sorted(s["metadata"]["name"] for s in cluster.secrets()) == ["styx-node-1", "styx-node-2"]

    clock.advance(60)
    assert [i.instance_id for i in provider.list_instances()] == [running]
    assert len(cluster.secrets()) == 2  # young: perhaps its pod is being created right now

    clock.advance(300)
    assert [i.instance_id for i in provider.list_instances()] == [running]
    assert [s["metadata"]["name"] for s in cluster.secrets()] == ["styx-node-1"]  # the pod's own stays
    provider.terminate(running)
    assert cluster.pods() == [] and cluster.secrets() == []


def test_in_cluster_config_uses_the_mounted_service_account_over_verified_tls(tmp_path: Path) -> None:
    """A provisioner in a pod (no kubeconfig, KUBERNETES_SERVICE_HOST set) reaches the API
    server over HTTPS, verifying it with the mounted ca.crt, authenticated by the mounted
    token, in the mounted namespace: offers, a pod and its cleanup all work there."""
    pytest.importorskip("cryptography.x509")
    from pki import make_pki

    pki = make_pki(tmp_path / "pki")
    token = "sa-token-" + os.urandom(8).hex()
    nodes = [FakeNode("n1", cpus=4, memory_gib=16)]
    fake = FakeKubernetes(
        nodes, tmp_path / "kubelet", base_env={"PATH": os.environ["PATH"]}, namespaces=("team-a",),
        tls=(pki["cert"], pki["key"]), token=token,
    ).start()
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_bytes(pki["ca"].read_bytes())
    (sa / "namespace").write_text("team-a")
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n")
    sleeper.chmod(0o755)
    in_pod = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(fake.port),
        "STYX_K8S_KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        "STYX_K8S_SERVICE_ACCOUNT_DIR": str(sa),
        "STYX_K8S_AGENT_COMMAND": str(sleeper),
        "STYX_K8S_POLL_SECONDS": "0.05",
    }
    try:
        provider = KubernetesProvider(env=in_pod)
        status = provider.check()
        assert status.enabled, status
        assert status.reason.startswith("in-cluster: reachable")
        instance = create(provider, offer_of(provider, "cpu001-mem0002g", region="in-cluster"))
        assert instance == "in-cluster/team-a/styx-node-1"
        assert [p["metadata"]["namespace"] for p in fake.pods()] == ["team-a"]
        provider.terminate(instance)
        assert fake.pods() == [] and fake.secrets() == []

        # The CA is really checked: an unrelated CA in the mount makes the server unverifiable.
        (sa / "ca.crt").write_bytes(pki["other_ca"].read_bytes())
        untrusted = KubernetesProvider(env=in_pod).check()
        assert not untrusted.enabled and "CERTIFICATE_VERIFY_FAILED" in untrusted.reason, untrusted
        # And so is the token: a wrong one is refused by the API server.
        (sa / "ca.crt").write_bytes(pki["ca"].read_bytes())
        (sa / "token").write_text("not-the-token")
        refused = KubernetesProvider(env=in_pod).check()
        assert not refused.enabled, refused
    finally:
        fake.close()
