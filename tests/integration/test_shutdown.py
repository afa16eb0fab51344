"""Every service stops within 2 s of SIGTERM with work in flight (issue 9).

Each service runs as a real process while client threads keep calling it (unary calls,
and the long-lived streams agents and the CLI hold open); then SIGTERM, and the test's own
deadline: exited, with code 0, within SHUTDOWN_BUDGET_S.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from helpers import ServiceProcess, free_port, start_service, stop_process, wait_until
from styx.common.clients import open_channel
from styx.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    provisioner_pb2,
    provisioner_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

TOKEN = "test-token-shutdown"
SHUTDOWN_BUDGET_S = 2.0


@contextmanager
def load(calls: list[Callable[[], object]], per_call: int = 2) -> Iterator[list[int]]:
    """Keep ``per_call`` threads per callable calling it until the block ends; errors
    (the server going away) are expected and ignored. Yields the count of calls done."""
    done = threading.Event()
    count = [0]

    def worker(fn: Callable[[], object]) -> None:
        while not done.is_set():
            try:
                fn()
                count[0] += 1
            except grpc.RpcError:
                if done.wait(0.05):
                    return

    threads = [threading.Thread(target=worker, args=(fn,), daemon=True) for fn in calls for _ in range(per_call)]
    for t in threads:
        t.start()
    try:
        yield count
    finally:
        done.set()
        for t in threads:
            t.join(5)


def stream(open_stream: Callable[[], Iterator[object]]) -> Callable[[], object]:
    """A call that opens a server stream and reads it to its end (the server's shutdown)."""

    def call() -> object:
        for _ in open_stream():
            pass
        return None

    return call


def sigterm_within_budget(service: ServiceProcess) -> float:
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    code = stop_process(service.proc, timeout=SHUTDOWN_BUDGET_S)
    took = time.monotonic() - started
    assert code == 0, f"exit {code} after {took:.1f}s:\n{service.log_text()[-3000:]}"
    assert took < SHUTDOWN_BUDGET_S, f"took {took:.2f}s to stop"
    print(f"{service.name} stopped {took:.2f}s after SIGTERM")  # shown with pytest -s
    return took


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, STYX_TOKEN=TOKEN, STYX_HOME=str(home), STYX_LOCAL_NODE_CPUS="1",
                STYX_LOCAL_NODE_MEMORY_GIB="0.5")


def test_scheduler_stops_within_2s_under_load(tmp_path: Path) -> None:
    sched = start_service("styx.scheduler", ["--port", "0", "--broker", f"127.0.0.1:{free_port()}"],
                          tmp_path / "run", env=_env(tmp_path))
    channel = open_channel(sched.endpoint, TOKEN)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    gateway = agent_pb2_grpc.AgentGatewayStub(channel)

    def submit() -> object:
        spec = common_pb2.TaskSpec(name="t", run="true")
        job = scheduler_pb2.JobSpec(tasks=[spec] * 1)
        return stub.SubmitJob(scheduler_pb2.SubmitJobRequest(request_id=str(uuid.uuid4()), job=job), timeout=10)

    calls = [
        submit,
        lambda: stub.ListJobs(scheduler_pb2.ListJobsRequest(), timeout=10),
        stream(lambda: stub.WatchEvents(scheduler_pb2.WatchEventsRequest(), timeout=30)),
        stream(lambda: gateway.WorkStream(agent_pb2.WorkStreamRequest(node_id="n1"), timeout=30)),
    ]
    with load(calls) as count:
        wait_until(lambda: count[0] >= 20, timeout=20, message="load on the scheduler")
        sigterm_within_budget(sched)
    channel.close()


def test_broker_stops_within_2s_under_load(tmp_path: Path) -> None:
    broker = start_service("styx.broker", ["--port", "0", "--lease-seconds", "60"], tmp_path / "run",
                           env=_env(tmp_path))
    channel = open_channel(broker.endpoint, TOKEN)
    stub = broker_pb2_grpc.ResourceBrokerStub(channel)
    capacity = common_pb2.Capacity(cpus=4, memory_gib=8)

    def register() -> object:
        node = f"n-{uuid.uuid4().hex[:8]}"
        request = broker_pb2.RegisterNodeRequest(request_id=node, node_id=node, provider="local", capacity=capacity)
        return stub.RegisterNode(request, timeout=10)

    def allocate() -> object:
        ask = broker_pb2.AllocationRequest(allocation_id=f"{uuid.uuid4().hex}/1", task_id="t",
                                           resources=common_pb2.ResourceRequest(cpus=0.01))
        return stub.Allocate(broker_pb2.AllocateRequest(requests=[ask]), timeout=10)

    calls = [register, allocate, lambda: stub.ListNodes(broker_pb2.ListNodesRequest(include_lost=True), timeout=10)]
    with load(calls) as count:
        wait_until(lambda: count[0] >= 20, timeout=20, message="load on the broker")
        sigterm_within_budget(broker)
    channel.close()


def test_provisioner_stops_within_2s_under_load(tmp_path: Path) -> None:
    """The CI flake: the provisioner outlived a 10 s SIGTERM deadline (reconcile and
    operation workers were joined one after another, 5 s each, after a 5 s server grace)."""
    dead = f"127.0.0.1:{free_port()}"
    prov = start_service(
        "styx.provisioner",
        ["--port", "0", "--scheduler", dead, "--broker", dead, "--reconcile-seconds", "0.1"],
        tmp_path / "run",
        env=_env(tmp_path),
    )
    channel = open_channel(prov.endpoint, TOKEN)
    stub = provisioner_pb2_grpc.ProvisionerStub(channel)

    def watch_unknown() -> object:
        request = provisioner_pb2.GetOperationRequest(operation_id="op-none")
        return list(stub.WatchOperation(request, timeout=10))

    calls = [
        lambda: stub.ListOffers(provisioner_pb2.ListOffersRequest(), timeout=10),
        lambda: stub.ListProviders(provisioner_pb2.ListProvidersRequest(), timeout=10),
        lambda: stub.ListInstances(provisioner_pb2.ListInstancesRequest(), timeout=10),
        watch_unknown,
    ]
    with load(calls) as count:
        wait_until(lambda: count[0] >= 20, timeout=20, message="load on the provisioner")
        sigterm_within_budget(prov)
    channel.close()


SLOW_PROVIDER = """
import os, sys, time
from pathlib import Path
from styx_plugins.local import provider

real = provider.LocalProvider.list_instances


def slow(self):
    # A cloud API that takes its time: a reconcile pass is inside it when SIGTERM comes.
    Path(os.environ["SLOW_MARKER"]).touch()
    time.sleep(8)
    return real(self)


provider.LocalProvider.list_instances = slow
from styx.provisioner.main import main

main(sys.argv[1:])
"""


def test_provisioner_stops_within_2s_with_a_provider_call_in_flight(tmp_path: Path) -> None:
    """The CI flake: a provider call in flight (here an 8 s list_instances in a reconcile
    pass) held the provisioner past its SIGTERM deadline: its loops were joined one after
    another, 5 s each, before a 5 s server grace. What is in flight is left to the next start."""
    (tmp_path / "slow_provisioner.py").write_text(SLOW_PROVIDER)
    env = _env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env["SLOW_MARKER"] = str(tmp_path / "in-slow-call")
    dead = f"127.0.0.1:{free_port()}"
    prov = start_service(
        "slow_provisioner",
        ["--port", "0", "--scheduler", dead, "--broker", dead, "--reconcile-seconds", "0.1"],
        tmp_path / "run",
        env=env,
    )
    stub = provisioner_pb2_grpc.ProvisionerStub(open_channel(prov.endpoint, TOKEN))
    with load([lambda: stub.ListOffers(provisioner_pb2.ListOffersRequest(), timeout=10)]) as count:
        wait_until(lambda: count[0] >= 5, timeout=20, message="load on the provisioner")
        wait_until((tmp_path / "in-slow-call").exists, timeout=10, message="a reconcile pass in the slow call")
        sigterm_within_budget(prov)


def test_scheduler_stops_within_2s_with_a_big_submit_in_flight(tmp_path: Path) -> None:
    """A SubmitJob still writing when SIGTERM comes is cut off (its transaction rolls back);
    the client's retry with the same request_id, to the restarted scheduler, stores the job
    exactly once."""
    args = ["--port", str(free_port()), "--broker", f"127.0.0.1:{free_port()}"]
    env = _env(tmp_path)
    sched = start_service("styx.scheduler", args, tmp_path / "run", env=env)
    stub = scheduler_pb2_grpc.SchedulerStub(open_channel(sched.endpoint, TOKEN))
    specs = [common_pb2.TaskSpec(name=f"t{i}", run="true") for i in range(60_000)]
    request = scheduler_pb2.SubmitJobRequest(request_id="big-1", job=scheduler_pb2.JobSpec(tasks=specs))
    future = stub.SubmitJob.future(request, timeout=60)
    time.sleep(0.5)  # no event to wait for inside the server: give the call time to reach it
    sigterm_within_budget(sched)
    with contextlib.suppress(grpc.RpcError):
        future.result()  # cut off (or, on a fast machine, done): either way retried below
    again = start_service("styx.scheduler", args, tmp_path / "run", env=env, name="scheduler-2")
    try:
        stub = scheduler_pb2_grpc.SchedulerStub(open_channel(again.endpoint, TOKEN))
        reply = stub.SubmitJob(request, timeout=120)
        jobs = stub.ListJobs(scheduler_pb2.ListJobsRequest(), timeout=10).jobs
        assert [j.job_id for j in jobs] == [reply.job_id]
        job = stub.GetJob(scheduler_pb2.GetJobRequest(job_id=reply.job_id, task_limit=1), timeout=10)
        assert sum(job.task_counts.values()) == 60_000
    finally:
        assert again.stop() == 0, again.log_text()[-3000:]
