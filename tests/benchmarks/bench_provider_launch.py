"""Time from `sky launch` to the task's first output line, per provider, beside floors.

Run: ``python tests/benchmarks/bench_provider_launch.py [--runs 3]``. Prints figures;
asserts nothing. It starts a local control plane in a temporary STYX_HOME (first, untimed
warm-up launch) and a fake Kubernetes cluster (tests/fakes/k8s_api.py: the real
``kubernetes`` client in the provisioner talks to a fake API server whose "kubelet" runs
the pod's agent as a local process), and stops both at the end.

Each timed run is ``sky launch -c NAME --infra P -- 'echo first'`` on a new cluster, so a
new node is made every time (a new pod on k8s, a new agent process on local), then
``sky down NAME``. Measured from just before the ``sky`` process starts to the moment
``first`` arrives on its stdout. Floors in the same run: a bare ``bash -c 'echo first'``
spawn, and the same launch on the local provider (what the k8s path adds is the pod: API
calls, the fake kubelet's process start, the agent joining).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from launch_timing import first_output  # noqa: E402

from fakes.k8s_api import FakeKubernetes, FakeNode  # noqa: E402
from helpers import sky_command  # noqa: E402

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        root = Path(tmp)
        base = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(root), "STYX_HOME": str(root / "pods")}
        nodes = [FakeNode("cpu-node-1", cpus=8, memory_gib=32), FakeNode("cpu-node-2", cpus=8, memory_gib=32)]
        cluster = FakeKubernetes(nodes, root / "kubelet", base_env=base).start()
        kubeconfig = cluster.kubeconfig(root / "kubeconfig", {"bench": "default"})
        env = {k: v for k, v in os.environ.items() if not k.startswith("STYX_")}
        env.update(
            STYX_HOME=str(root / "home"),
            NO_COLOR="1",
            STYX_K8S_KUBECONFIG=str(kubeconfig),
            STYX_K8S_AGENT_COMMAND=str(BIN / "styx-agent"),
            STYX_K8S_POLL_SECONDS="0.1",
            STYX_LOCAL_MAX_NODES="2",
        )
        try:
            results: dict[str, list[float]] = {"process spawn (floor)": [], "local": [], "kubernetes": []}
            # Warm-up: starts the control plane (not timed) and imports everything once.
            for argv in (["launch", "-c", "warm", "--infra", "local", "--", "true"], ["down", "warm"]):
                subprocess.run([*sky_command(), *argv], env=env, check=True, capture_output=True)
            for i in range(args.runs):
                results["process spawn (floor)"].append(first_output(["bash", "-c", "echo first"], env))
                for provider, infra in (("local", "local"), ("kubernetes", "k8s")):
                    name = f"b-{provider[:3]}-{i}"
                    argv = [*sky_command(), "launch", "-c", name, "--infra", infra, "--", "echo first"]
                    results[provider].append(first_output(argv, env))
                    subprocess.run([*sky_command(), "down", name], env=env, check=True, capture_output=True)
            print(f"sky launch -> first output line, {args.runs} runs each (new node per run, plane warm)")
            for what, values in results.items():
                shown = ", ".join(f"{v:.3f}" for v in values)
                print(f"  {what:<24} median {statistics.median(values):6.3f} s   ({shown})")
        finally:
            subprocess.run([*sky_command(), "local", "down"], env=env, capture_output=True)
            cluster.close()


if __name__ == "__main__":
    main()
