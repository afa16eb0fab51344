"""Three replicas of every service on one PostgreSQL while 1,000 tasks run; a random
replica is killed with -9 (and restarted) every few seconds.

Every process gets the other services' replica lists as endpoints, so calls that hit a
dead replica go to another. Tasks append their id to a file: each must appear exactly
once (run once, never twice at the same time or in turn), and every task must succeed.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_crash_safety import TERMINAL, Stack, count_state, lease_holder, submit, task_states

from helpers import free_port, wait_until
from styx.common.clients import open_channel
from styx.v1 import common_pb2, scheduler_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SERVICES = ("provisioner", "broker", "scheduler")
REPLICAS = 3
TASKS = 1000


@dataclass(kw_only=True)
class ReplicaStack(Stack):
    """Every process dials the full replica list of the services it talks to."""

    def peers(self, service: str) -> str:
        return ",".join(self.endpoint(f"{service}-{i}") for i in range(REPLICAS))

    def service_args(self, name: str) -> list[str]:
        service = name.split("-")[0]
        args = ["--port", str(self.ports[name]), "--db-url", self.db_urls[name]]
        if service == "scheduler":
            args += ["--broker", self.peers("broker")]
        elif service == "broker":
            args += ["--provisioner", self.peers("provisioner"), "--replica-id", name]
        else:
            args += ["--scheduler", self.peers("scheduler"), "--broker", self.peers("broker"), "--replica-id", name]
        return args + self.flags.get(service, [])

    def client(self) -> scheduler_pb2_grpc.SchedulerStub:
        return scheduler_pb2_grpc.SchedulerStub(open_channel(self.peers("scheduler"), self.token))


def current_replica_id(stack: ReplicaStack, name: str) -> str:
    """The replica id process ``name`` logged when it last started serving."""
    lines = [ln for ln in stack.procs[name].log_text().splitlines() if '"msg": "serving"' in ln]
    return str(json.loads(lines[-1]).get("replica", "")) if lines else ""


def test_every_task_runs_exactly_once_while_replicas_are_killed(tmp_path: Path, postgres_fresh_url: str) -> None:
    token = secrets.token_hex(16)
    home = tmp_path / "home"
    home.mkdir()
    names = [f"{s}-{i}" for s in SERVICES for i in range(REPLICAS)]
    env = {
        **os.environ,
        "STYX_HOME": str(home),
        "STYX_TOKEN": token,
        "STYX_LOCAL_MAX_NODES": "2",
        "STYX_LOCAL_NODE_CPUS": "16",
        "STYX_LOCAL_NODE_MEMORY_GIB": "16",
        "STYX_LOG_LEVEL": "INFO",
    }
    stack = ReplicaStack(
        root=tmp_path,
        env=env,
        token=token,
        ports={n: free_port() for n in names},
        db_urls=dict.fromkeys(names, postgres_fresh_url),
        flags={"scheduler": ["--dispatch-lease-seconds", "3"], "broker": ["--lease-seconds", "6"]},
    )
    out = tmp_path / "started.txt"
    rng = random.Random(20261203)
    kills: list[str] = []
    done = threading.Event()
    try:
        stack.start(*names)
        specs = [
            common_pb2.TaskSpec(
                name=f"t{i}",
                run=f'echo "$STYX_TASK_ID" >> {out}',
                resources=common_pb2.ResourceRequest(cpus=0.5),
            )
            for i in range(TASKS)
        ]
        job = submit(stack.client(), specs)

        def victim(k: int) -> str:
            # Services in turn; among the schedulers, the one dispatching (the worst moment).
            service = SERVICES[k % len(SERVICES)]
            if service == "scheduler":
                holder = lease_holder(postgres_fresh_url)
                schedulers = [n for n in names if n.startswith("scheduler")]
                return next((n for n in schedulers if current_replica_id(stack, n) == holder), schedulers[0])
            return f"{service}-{rng.randrange(REPLICAS)}"

        def killer() -> None:
            while not done.wait(3.0):
                name = victim(len(kills))
                stack.kill9(name)
                kills.append(name)
                stack.start(name)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        started = time.monotonic()
        wait_until(
            lambda: count_state(stack.client(), job.job_id, TERMINAL) == TASKS,
            timeout=300,
            interval=1.0,
            message="every task to end",
        )
        done.set()
        thread.join(60)
        elapsed = time.monotonic() - started
        tasks = task_states(stack.client(), job.job_id)
        failed = {n: t.failure_reason for n, t in tasks.items() if t.state != common_pb2.TASK_STATE_SUCCEEDED}
        assert not failed, list(failed.items())[:5]
        starts = Counter(out.read_text().split())
        assert set(starts) == {t.task_id for t in tasks.values()}
        twice = {k: v for k, v in starts.items() if v > 1}
        assert not twice, f"tasks ran more than once: {list(twice.items())[:5]}"
        assert len(kills) >= len(SERVICES), f"only {kills} in {elapsed:.0f} s: not every service was killed"
    finally:
        done.set()
        stack.stop()
