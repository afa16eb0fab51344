"""A Styx control plane (real service processes) whose provisioner creates EC2 instances on
moto (``aws_moto``), and the VM side: playing an instance's boot by starting
``python -m styx.agent`` locally with the environment its user data carries.

Services get pre-picked ports (a restarted service comes back on the address its peers
dial), the moto endpoint through ``AWS_ENDPOINT_URL_EC2`` and dummy credentials.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakes.aws_moto import REGION, MotoEc2
from helpers import ServiceStack, free_port, processes_with_env
from styx.provisioner import bootstrap
from styx.v1 import (
    broker_pb2,
    common_pb2,
    provisioner_pb2,
    scheduler_pb2,
)

IMAGE = "ami-0123456789abcdef0"


@dataclass(kw_only=True)
class AwsStack(ServiceStack):
    """Broker, provisioner and scheduler processes using the AWS plugin against moto."""

    moto: MotoEc2
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def import_catalog(self, offers: list[common_pb2.Offer]) -> None:
        """Replace the broker's AWS catalog, so the ranked list of offers is known."""
        request = broker_pb2.ImportCatalogRequest(request_id=str(uuid.uuid4()), offers=offers)
        self.broker().ImportCatalog(request, timeout=30)

    def submit(self, *specs: common_pb2.TaskSpec) -> scheduler_pb2.SubmitJobResponse:
        """Submit one job."""
        request = scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=scheduler_pb2.JobSpec(tasks=specs))
        return self.scheduler().SubmitJob(request, timeout=60)

    def task(self, task_id: str) -> common_pb2.Task:
        """The task as the scheduler has it now."""
        return self.scheduler().GetTask(scheduler_pb2.GetTaskRequest(task_id=task_id), timeout=30)

    def terminate_node(self, node_id: str) -> provisioner_pb2.Operation:
        """Terminate a node's instance through the Provisioner RPC; wait for the operation."""
        stub = self.provisioner()
        started = stub.Terminate(
            provisioner_pb2.TerminateRequest(request_id=str(uuid.uuid4()), node_id=node_id), timeout=30
        )
        updates = stub.WatchOperation(
            provisioner_pb2.GetOperationRequest(operation_id=started.operation_id), timeout=60
        )
        return list(updates)[-1]

    def play_boot(self, instance: dict[str, Any], cpus: float = 2, memory_gib: float = 4) -> subprocess.Popen[bytes]:
        """Do what the instance's user data does on a VM: start the agent with its env.

        The agent gets the instance's own STYX_HOME (its "disk") and the offer's size.
        """
        instance_id = instance["InstanceId"]
        boot = bootstrap.parse_startup_env(self.moto.user_data(instance_id))
        vm_home = self.vm_home(instance_id)
        vm_home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STYX_", "AWS_"))}
        env.update(boot)
        env.update(
            STYX_HOME=str(vm_home),
            STYX_INSTANCE_ID=instance_id,
            STYX_AGENT_ZONE=instance["Placement"]["AvailabilityZone"],
            STYX_AGENT_CPUS=str(cpus),
            STYX_AGENT_MEMORY_GIB=str(memory_gib),
            STYX_AGENT_HEARTBEAT_SECONDS="1",
        )
        with open(vm_home / "agent.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "styx.agent"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=str(vm_home),
                start_new_session=True,
            )
        self.agents[instance_id] = proc
        return proc

    def vm_home(self, instance_id: str) -> Path:
        """The directory standing in for an instance's disk."""
        return self.root / "vms" / instance_id

    def kill_vm(self, instance_id: str) -> None:
        """The VM dies: its agent and every task process on it, at once (SIGKILL)."""
        proc = self.agents.pop(instance_id, None)
        for pid in processes_with_env("STYX_HOME", str(self.vm_home(instance_id))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(10)

    def stop(self) -> None:
        """Stop every service and VM process."""
        self.stop_services()
        for instance_id in list(self.agents):
            self.kill_vm(instance_id)


def make_stack(tmp_path: Path, moto: MotoEc2, **flags: list[str]) -> AwsStack:
    """An AwsStack (not started) with its own STYX_HOME, token and ports; moto is reset."""
    moto.reset()
    token = secrets.token_hex(16)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **moto.env(),
        "STYX_HOME": str(home),
        "STYX_TOKEN": token,
        "STYX_LOG_LEVEL": "INFO",
        "STYX_AWS_REGIONS": REGION,
        "STYX_AWS_IMAGE_ID": IMAGE,
        "STYX_AWS_POLL_SECONDS": "0.1",
        "STYX_AWS_MAX_ATTEMPTS": "1",
        "STYX_AWS_CREATE_TIMEOUT_SECONDS": "20",
        # The agent must not install anything: tests play the boot with this checkout.
        "STYX_AGENT_INSTALL": "true",
    }
    ports = {name: free_port() for name in ("broker", "provisioner", "scheduler")}
    merged = {k: list(v) for k, v in flags.items()}
    merged["scheduler"] = ["--dispatch-lease-seconds", "3", *merged.get("scheduler", [])]
    return AwsStack(root=tmp_path, moto=moto, token=token, env=env, ports=ports, flags=merged)


def aws_offer(zone: str, price: float, instance_type: str = "t3.medium", cpus: float = 2, memory: float = 4) -> Any:
    """A catalog offer in ``zone`` of us-east-1."""
    return common_pb2.Offer(
        provider="aws",
        region=REGION,
        zone=zone,
        instance_type=instance_type,
        cpus=cpus,
        memory_gib=memory,
        price_per_hour=price,
        spot_price_per_hour=price / 3,
        arch="x86_64",
    )


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    """An instance's tags as a dict."""
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
