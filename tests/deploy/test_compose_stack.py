"""deploy/: the three service images built against a real Docker daemon, the compose stack
(two replicas of each service) brought up, a DAG run through it with `sky` from the host,
one replica of each service killed mid-run, and the job still completes.

PostgreSQL is the machine's own server (a fresh database for this test); the compose
file's own PostgreSQL service is behind its `postgres` profile, which this test leaves off.
Every container is on the host's network, each replica on its own loopback port.

The tasks run on the local provider inside the provisioner containers: its nodes are agent
processes in the container of the replica that created them, so killing that replica kills
its agents. The broker then loses those nodes' heartbeats, the scheduler re-queues their
tasks (the job is submitted with retries) and the surviving provisioner replica creates new
nodes for them; so the DAG completes either way.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerd import BASE_IMAGE, Daemon, DockerUnavailable, docker_daemon

from helpers import free_port, sky_command, sky_env, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("scheduler", "broker", "provisioner")
REPLICAS = (1, 2)
TAG = "test"

DAG = """\
name: compose-dag
---
name: a
run: echo a ran
---
name: b
depends_on: [a]
run: sleep 15; echo b ran
---
name: c
depends_on: [a]
run: sleep 15; echo c ran
---
name: d
depends_on: [b, c]
run: echo d ran
"""


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    try:
        with docker_daemon() as running:
            yield running
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker daemon here: {exc}")


def build_images(daemon: Daemon) -> dict[str, int]:
    """Build each service's image from deploy/Dockerfile; their sizes in bytes."""
    sizes = {}
    for service in SERVICES:
        image = f"styx-{service}:{TAG}"
        daemon.docker(
            "build", "--network", "host", "-f", str(REPO / "deploy/Dockerfile"),
            "--build-arg", f"SERVICE={service}", "--build-arg", f"BASE={BASE_IMAGE}", "-t", image, str(REPO),
            timeout=900,
        )  # fmt: skip
        config = json.loads(daemon.docker("image", "inspect", image).stdout)[0]
        assert config["Config"]["User"] == "styx", f"{image} must not run as root"
        assert config["Config"]["Healthcheck"]["Test"] == ["CMD", "python", "-m", "styx.health"]
        sizes[service] = int(config["Size"])
    return sizes


def health_states(daemon: Daemon, project: str) -> dict[str, str]:
    """Each compose container's name and Docker health status."""
    ids = daemon.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    if not ids:
        return {}
    out = {}
    for c in json.loads(daemon.docker("inspect", *ids).stdout):
        out[c["Config"]["Labels"]["com.docker.compose.service"]] = (c["State"].get("Health") or {}).get("Status", "")
    return out


def agent_host(daemon: Daemon, project: str) -> str:
    """The provisioner container with the most agent processes (the local provider's nodes)."""
    counts = {}
    for i in REPLICAS:
        name = f"{project}-provisioner-{i}-1"
        counts[name] = daemon.docker("top", name, "-eo", "pid,args").stdout.count("styx.agent")
    name = max(counts, key=lambda n: counts[n])
    assert counts[name] > 0, f"no agent runs in any provisioner container: {counts}"
    return name


def test_dag_completes_through_the_compose_stack_while_a_replica_of_each_service_is_killed(
    daemon: Daemon, tmp_path: Path, postgres_fresh_url: str
) -> None:
    started = time.monotonic()
    sizes = build_images(daemon)
    built = time.monotonic()
    token = secrets.token_hex(16)
    ports = {f"{s}-{i}": free_port() for s in SERVICES for i in REPLICAS}
    project = f"styxtest{secrets.token_hex(3)}"
    env = {
        **daemon.env,
        "STYX_TOKEN": token,
        "STYX_DB_URL": postgres_fresh_url,
        "STYX_BIND": "127.0.0.1",
        "STYX_IMAGE_TAG": TAG,
        "STYX_BASE_IMAGE": BASE_IMAGE,
        # Short leases: a killed replica's work moves to its peer in seconds, not minutes.
        "STYX_DISPATCH_LEASE_SECONDS": "3",
        "STYX_LEASE_SECONDS": "6",
        **{f"STYX_{s.upper()}_PORT_{i}": str(ports[f"{s}-{i}"]) for s in SERVICES for i in REPLICAS},
    }
    daemon.env = env
    compose_file = str(REPO / "deploy/compose.yaml")
    try:
        daemon.compose("-f", compose_file, "-p", project, "up", "-d", "--no-build")
        wait_until(
            lambda: (h := health_states(daemon, project)) and len(h) == 6 and set(h.values()) == {"healthy"},
            timeout=120, interval=0.5, message="every replica to be healthy",
        )  # fmt: skip
        healthy = time.monotonic()

        def endpoints(service: str) -> str:
            return ",".join(f"127.0.0.1:{ports[f'{service}-{i}']}" for i in REPLICAS)

        home = tmp_path / "home"
        home.mkdir()
        sky_environ = sky_env(
            home,
            STYX_ENDPOINT=endpoints("scheduler"),
            STYX_BROKER_ENDPOINT=endpoints("broker"),
            STYX_PROVISIONER_ENDPOINT=endpoints("provisioner"),
            STYX_TOKEN=token,
        )

        def sky(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*sky_command(), *args], env=sky_environ, capture_output=True, text=True, timeout=120)

        dag = tmp_path / "dag.yaml"
        dag.write_text(DAG)
        launch = sky("launch", "-d", "-y", "--retries", "3", str(dag))
        assert launch.returncode == 0, launch.stderr
        job_id = next(w for w in (launch.stdout + launch.stderr).split() if w.startswith("j-")).strip(".,:")

        def job() -> dict:
            proc = sky("queue", job_id, "--json")
            assert proc.returncode == 0, proc.stderr
            return dict(json.loads(proc.stdout))

        wait_until(
            lambda: any(t["name"] in ("b", "c") and t["state"] == "RUNNING" for t in job()["tasks"]),
            timeout=240, interval=0.5, message="b or c to be running",
        )  # fmt: skip
        # The provisioner replica whose container runs the agents (the worst one to lose:
        # its nodes die with it), and the first replica of the other two services.
        victims = [agent_host(daemon, project), f"{project}-scheduler-1-1", f"{project}-broker-1-1"]
        for container in victims:
            daemon.docker("kill", container)
        final = wait_until(
            lambda: (j := job())["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") and j,
            timeout=300, interval=1.0, message="the job to end",
        )  # fmt: skip
        done = time.monotonic()
        assert final["state"] == "SUCCEEDED", json.dumps(final, indent=1)
        assert [t["state"] for t in final["tasks"]] == ["SUCCEEDED"] * 4
        states = health_states(daemon, project)
        # The survivors: whichever replica of each service was not killed (the provisioner
        # killed is the one that ran the agents, replica 1 or 2).
        killed = {v.removeprefix(f"{project}-").removesuffix("-1") for v in victims}
        survivors = [f"{s}-{i}" for s in SERVICES for i in REPLICAS if f"{s}-{i}" not in killed]
        assert len(survivors) == len(SERVICES), (victims, survivors)
        assert all(states[name] == "healthy" for name in survivors), states
        print(
            "image sizes (MB): " + ", ".join(f"{s} {b / 1e6:.0f}" for s, b in sizes.items())
            + f"; killed {', '.join(victims)}; build {built - started:.0f} s, up to healthy {healthy - built:.1f} s,"
            f" DAG with kills {done - healthy:.1f} s; attempts "
            + ", ".join(f"{t['name']}={t.get('attempt')}" for t in final["tasks"])
        )  # fmt: skip
    finally:
        logs = daemon.compose("-f", compose_file, "-p", project, "logs", "--no-color", check=False, timeout=60)
        (tmp_path / "compose.log").write_text(logs.stdout + logs.stderr)
        daemon.compose("-f", compose_file, "-p", project, "down", "-v", "--timeout", "10", check=False, timeout=120)
        left = daemon.docker("ps", "-aq", check=False).stdout.split()
        assert not left, f"containers left: {left}"
