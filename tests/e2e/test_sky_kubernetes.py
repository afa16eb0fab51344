"""The Kubernetes provider as a user meets it: `sky` against a local plane whose provisioner
runs the real ``kubernetes`` client against tests/fakes/k8s_api.py.

No kube-apiserver can be installed here, so the API server is the fake (it speaks the
core/v1 REST wire format and plays the scheduler and the kubelet: a bound pod's command,
the real ``styx-agent``, runs as a local process with the pod's env and dials the real
control plane). Each pod gets its own loopback address (127.0.0.11, .12, ...) as its
podIP, which the agent advertises, so a gang's ranks reach each other as on a pod network.

Covered: a GPU task runs in a pod with requests = limits, the GPU nodeSelector and
toleration and the join token only in a Secret, and its output comes back; `sky down`
leaves no Styx-labelled pod or Secret; `sky show-gpus --infra k8s` and `sky check
kubernetes`; an unschedulable pod fails over to the local provider within 30 s with the
attempt shown; num_nodes 2 where rank 1 opens a TCP connection to rank 0; bad input
(unknown context, a GPU the cluster lacks, an unreachable API server).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.k8s_api import FakeKubernetes, FakeNode
from helpers import free_port, run_sky, wait_until

pytest.importorskip("kubernetes", reason="pip install 'styx[kubernetes]'")

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetes]:
    root = tmp_path_factory.mktemp("k8s")
    nodes = [
        FakeNode("gpu-node-1", cpus=16, memory_gib=64, gpus=4, gpu_product="NVIDIA-A100-SXM4-80GB", taints=[GPU_TAINT]),
        FakeNode("cpu-node-1", cpus=4, memory_gib=16),
        FakeNode("cpu-node-2", cpus=4, memory_gib=16),
    ]
    # What the "kubelet" runs pods with: PATH to this checkout's agent, its own Styx home.
    base = {
        "PATH": f"{BIN}{os.pathsep}/usr/bin:/bin",
        "HOME": str(root),
        "STYX_HOME": str(root / "pods-home"),
        "LANG": "C.UTF-8",
    }
    fake = FakeKubernetes(nodes, root / "kubelet", base_env=base).start()
    fake.kubeconfig(root / "kubeconfig", {"fake": "default"})
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, cluster: FakeKubernetes) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("k8s-home")
    try:
        yield home
    finally:
        run_sky(["local", "down"], home, **k8s_env(cluster))


def k8s_env(cluster: FakeKubernetes, **extra: str) -> dict[str, str]:
    return {
        "STYX_K8S_KUBECONFIG": str(Path(cluster.work_dir).parent / "kubeconfig"),
        "STYX_K8S_AGENT_COMMAND": str(BIN / "styx-agent"),
        "STYX_K8S_POLL_SECONDS": "0.2",
        "STYX_K8S_SCHEDULE_TIMEOUT_SECONDS": "3",
        "STYX_LOCAL_MAX_NODES": "2",
        # The reconciler deletes orphan pods quickly (test_orphan_pod_is_deleted).
        "STYX_PROVISIONER_RECONCILE_SECONDS": "0.5",
        "STYX_LEAK_GRACE_SECONDS": "1",
        **extra,
    }


def sky(home: Path, cluster: FakeKubernetes, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return run_sky(list(args), home, timeout=timeout, **k8s_env(cluster))


def styx_pods(cluster: FakeKubernetes) -> list[dict]:
    return [p for p in cluster.pods("styx-managed=true")]


def test_gpu_task_runs_in_a_pod_and_sky_down_removes_it(home: Path, cluster: FakeKubernetes) -> None:
    launched = sky(
        home,
        cluster,
        "launch",
        "-c",
        "gpu",
        "--infra",
        "k8s",
        "--gpus",
        "A100:1",
        "--",
        'echo "gpus=$CUDA_VISIBLE_DEVICES"; nvidia-smi --query-gpu=name --format=csv,noheader',
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "gpus=0" in launched.stdout and "NVIDIA A100-SXM4-80GB" in launched.stdout
    (pod,) = styx_pods(cluster)
    spec = pod["spec"]
    (container,) = spec["containers"]
    res = container["resources"]
    assert res["requests"] == res["limits"] and res["limits"]["nvidia.com/gpu"] == "1"
    assert res["limits"]["cpu"] == "4" and res["limits"]["memory"] == "16Gi"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert spec["nodeName"] == "gpu-node-1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert container["command"] == [str(BIN / "styx-agent")] and "--node-id" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STYX_JOIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == pod["metadata"]["name"]
    assert env["STYX_SCHEDULER_ENDPOINT"]["valueFrom"]["secretKeyRef"]
    assert not any("value" in e and "TOKEN" in e["name"] for e in container["env"])  # no literal secret
    labels = pod["metadata"]["labels"]
    assert labels["styx-managed"] == "true" and labels["styx-node-id"] and labels["styx-plane"]
    (secret,) = cluster.secrets("styx-managed=true")
    assert secret["metadata"]["labels"]["styx-node-id"] == labels["styx-node-id"]
    down = sky(home, cluster, "down", "gpu")
    assert down.returncode == 0, down.stderr
    wait_until(
        lambda: not styx_pods(cluster) and not cluster.secrets("styx-managed=true"),
        timeout=30,
        message="no Styx-labelled pod or secret left after sky down",
    )


def test_show_gpus_and_check_list_the_cluster(home: Path, cluster: FakeKubernetes) -> None:
    shown = sky(home, cluster, "show-gpus", "--infra", "k8s")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("A100"))
    assert "kubernetes" in row and "1, 2, 4" in row, shown.stdout
    assert re.search(r"kubernetes: fake: reachable, A100 [0-4]/4 free", shown.stdout + shown.stderr), shown
    checked = sky(home, cluster, "check", "kubernetes")
    assert checked.returncode == 0, checked.stderr
    assert "enabled" in checked.stdout and "fake: reachable" in checked.stdout
    assert re.search(r"A100 \d/4 free", checked.stdout), checked.stdout


def test_two_ranks_on_two_pods_rank1_reaches_rank0(tmp_path: Path, cluster: FakeKubernetes) -> None:
    home = tmp_path / "gang-home"  # its own plane: the gang's idle pods must not absorb later tests
    try:
        _run_gang(home, cluster)
    finally:
        run_sky(["local", "down"], home)
        for pod in styx_pods(cluster):  # pool nodes outlive `sky local down` (as cloud VMs do)
            cluster.delete("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"])


def _run_gang(home: Path, cluster: FakeKubernetes) -> None:
    home.mkdir()
    port = free_port()
    script = home / "rank.py"
    script.write_text(
        textwrap.dedent(f"""\
        import os, socket, time
        first = os.environ["SKYPILOT_NODE_IPS"].splitlines()[0]
        if os.environ["SKYPILOT_NODE_RANK"] == "0":
            server = socket.create_server((first, {port}))
            conn, peer = server.accept()
            print("rank0 got", conn.recv(64).decode(), "from", peer[0], flush=True)
        else:
            for _ in range(300):
                try:
                    conn = socket.create_connection((first, {port}), timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            conn.sendall(b"hello-from-rank1")
            print("rank1 reached", first, flush=True)
        """)
    )
    task = home / "pair.yaml"
    task.write_text(f"name: pair\nnum_nodes: 2\nresources: {{cpus: 2, infra: k8s}}\nrun: python3 {script}\n")
    launched = sky(home, cluster, "launch", str(task), timeout=180)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "rank0 got hello-from-rank1" in launched.stdout, launched.stdout
    pods = styx_pods(cluster)
    assert len(pods) == 2 and len({p["status"]["podIP"] for p in pods}) == 2
    # The first address of NODE_IPS is rank 0's pod IP, and rank 1 dialled it from its own.
    ips = {p["metadata"]["labels"]["styx-node-id"]: p["status"]["podIP"] for p in pods}
    assert re.search(r"rank0 got hello-from-rank1 from 127\.0\.0\.\d+", launched.stdout)
    assert set(ips.values()) == {p["status"]["podIP"] for p in pods}


def test_bad_input_is_one_line_naming_the_thing(home: Path, cluster: FakeKubernetes) -> None:
    unknown = sky(home, cluster, "launch", "--infra", "k8s/nope", "--", "true")
    assert unknown.returncode != 0 and "k8s/nope" in unknown.stderr and "Traceback" not in unknown.stderr
    no_gpu = sky(home, cluster, "launch", "--infra", "k8s", "--gpus", "H100:1", "--", "true")
    assert no_gpu.returncode != 0 and "H100" in no_gpu.stderr and "Traceback" not in no_gpu.stderr
    # One line says why: nothing in k8s has an H100 (the job's own status lines aside).
    assert re.search(r"no enabled provider can satisfy .*H100:1, infra=k8s", no_gpu.stderr), no_gpu.stderr
    assert re.search(r"k8s/nope.*sky check", unknown.stderr), unknown.stderr
    assert not styx_pods(cluster)  # nothing half-created


def test_orphan_pod_is_deleted_and_another_planes_pod_kept(home: Path, cluster: FakeKubernetes) -> None:
    from styx.provider import PLANE_LABEL, AgentLaunch
    from styx_plugins.kubernetes.provider import KubernetesProvider

    # This plane's id, as it labels its pods.
    launched = sky(home, cluster, "launch", "-c", "own", "--infra", "k8s", "--cpus", "1", "--", "true")
    assert launched.returncode == 0, launched.stderr
    (own,) = styx_pods(cluster)
    plane_id = own["metadata"]["labels"]["styx-plane"]
    assert sky(home, cluster, "down", "own").returncode == 0
    sleeper = home / "sleeper"  # a pod that stays up (a real agent would fail to join "x")
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n")
    sleeper.chmod(0o755)
    provider = KubernetesProvider(env=k8s_env(cluster, STYX_K8S_AGENT_COMMAND=str(sleeper)))
    (offer,) = [o for o in provider.offers() if o.instance_type == "cpu001-mem0002g"]

    def create(node_id: str, plane: str) -> str:
        return provider.create(
            node_id=node_id,
            offer=offer,
            spot=False,
            labels={PLANE_LABEL: plane},
            request_id=f"req-{node_id}",
            agent_launch=AgentLaunch("127.0.0.1:1", "127.0.0.1:2", "x"),
        )

    create("node-orphan", plane_id)
    theirs = create("node-theirs", "another-plane")
    wait_until(
        lambda: (
            {p["metadata"]["name"] for p in styx_pods(cluster)} == {"styx-node-theirs"}
            and not cluster.secrets("styx-node-id=node-orphan")
        ),
        timeout=20,
        message="the reconciler to delete the orphan pod",
    )
    provider.terminate(theirs)
    assert not styx_pods(cluster) and not cluster.secrets("styx-managed=true")


def test_unreachable_api_server_is_reported_by_check(tmp_path: Path, cluster: FakeKubernetes) -> None:
    dead = tmp_path / "kubeconfig"
    doc = json.loads((Path(cluster.work_dir).parent / "kubeconfig").read_text())
    doc["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{free_port()}"
    dead.write_text(json.dumps(doc))
    home = tmp_path / "home"
    try:
        checked = run_sky(["check", "kubernetes"], home, **k8s_env(cluster, STYX_K8S_KUBECONFIG=str(dead)))
        assert checked.returncode == 0, checked.stderr
        assert "disabled" in checked.stdout and "cannot reach http://127.0.0.1" in checked.stdout, checked.stdout
        assert "fix:" in checked.stdout
    finally:
        run_sky(["local", "down"], home)


def test_a_tasks_image_id_is_its_node_pods_image(home: Path, cluster: FakeKubernetes) -> None:
    """``image_id: docker:IMAGE`` becomes the node pod's image, the node runs only tasks of
    that image, and a provider that cannot run an image is not offered (one line says so)."""
    launched = sky(
        home, cluster, "launch", "-c", "img", "--infra", "k8s", "--image-id", "docker:acme/train:1.2",
        "--", "echo from-image",
    )  # fmt: skip
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "from-image" in launched.stdout
    (pod,) = styx_pods(cluster)
    assert pod["spec"]["containers"][0]["image"] == "acme/train:1.2"
    # The node carries the image: a task naming another image does not land on it.
    other = sky(home, cluster, "exec", "img", "--image-id", "docker:acme/other:2", "--", "true")
    assert other.returncode != 0 and "docker:acme/other:2" in other.stderr, other.stdout + other.stderr
    assert sky(home, cluster, "down", "img").returncode == 0
    wait_until(lambda: not styx_pods(cluster), timeout=30, message="the image pod to go")

    local = sky(home, cluster, "launch", "--infra", "local", "--image-id", "docker:acme/train:1.2", "--", "true")
    assert local.returncode != 0 and "no enabled provider in local runs a per-task image" in local.stderr, local.stderr
    assert "Traceback" not in local.stderr
    bad = sky(home, cluster, "launch", "--image-id", "acme/train", "--", "true")
    assert bad.returncode == 2 and "--image-id: 'acme/train' is not docker:IMAGE" in bad.stderr, bad.stderr


def test_an_image_the_cluster_cannot_pull_names_the_tasks_image(tmp_path: Path, cluster: FakeKubernetes) -> None:
    # A plane of its own: the failed pull cools the context down for that plane.
    own = tmp_path / "home"
    try:
        cluster.unpullable.add("registry.invalid/nope:1")
        pulled = sky(
            own,
            cluster,
            "launch",
            "--detach",
            "--infra",
            "k8s",
            "--image-id",
            "docker:registry.invalid/nope:1",
            "--",
            "true",
        )
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        job_id = pulled.stdout.split()[0]
        task_id = re.search(r"\bt-[0-9a-f]+\b", pulled.stdout)
        assert job_id.startswith("j-") and task_id, pulled.stdout
        # The attempt fails with the task's image named; with no other place in k8s the task
        # waits out the cooldown (as for any capacity failure) until it is cancelled.

        def failed_attempt() -> str | None:
            out = sky(own, cluster, "status", "-v", task_id.group(0)).stdout
            return out if "cannot be pulled" in out else None

        shown = wait_until(failed_attempt, timeout=60, message="the failed attempt")
        assert "image 'registry.invalid/nope:1' cannot be pulled" in shown and "check the task's image_id" in shown, (
            shown
        )
        assert sky(own, cluster, "cancel", job_id).returncode == 0
        wait_until(lambda: not styx_pods(cluster), timeout=30, message="no pod left")
    finally:
        run_sky(["local", "down"], own, **k8s_env(cluster))


# Last: the failed attempt cools the context down for the rest of this plane's life.
def test_unschedulable_pod_fails_over_to_local_within_30s(home: Path, cluster: FakeKubernetes) -> None:
    # A taint the offers do not know about: the cluster looks free, the scheduler refuses.
    cluster.nodes[1].taints = [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]
    cluster.nodes[2].taints = [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]
    try:
        started = time.monotonic()
        launched = sky(home, cluster, "launch", "--cpus", "2", "--", "echo ran-on-$STYX_NODE_ID")
        elapsed = time.monotonic() - started
    finally:
        cluster.nodes[1].taints = cluster.nodes[2].taints = []
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "ran-on-" in launched.stdout
    assert elapsed < 30, elapsed
    # The failed attempt and the scheduler's message, as `sky status -v` shows cloud failovers.
    task_id = re.search(r"\bt-[0-9a-f]+\b", launched.stdout + launched.stderr)
    assert task_id, launched.stdout
    status = sky(home, cluster, "status", "-v", task_id.group(0))
    assert status.returncode == 0, status.stderr
    shown = status.stdout
    assert "kubernetes/fake" in shown and "unschedulable for 3 s" in shown, shown
    assert "untolerated taint" in shown and "local/local host" in shown, shown
    assert not [p for p in styx_pods(cluster) if p["status"].get("phase") == "Pending"]  # the pod was deleted
