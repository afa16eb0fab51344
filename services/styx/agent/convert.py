"""Conversion between styx.v1 agent/broker messages and the agent's dataclasses."""

from __future__ import annotations

from styx.agent.hardware import HostCapacity
from styx.agent.runner import Assignment, Cancellation, RunState, StatusReport
from styx.v1 import agent_pb2, common_pb2

_STATE = {
    RunState.RUNNING: common_pb2.TASK_STATE_RUNNING,
    RunState.SUCCEEDED: common_pb2.TASK_STATE_SUCCEEDED,
    RunState.FAILED: common_pb2.TASK_STATE_FAILED,
    RunState.CANCELLED: common_pb2.TASK_STATE_CANCELLED,
}


def work_item_from_proto(item: agent_pb2.WorkItem) -> Assignment | Cancellation | None:
    """A WorkItem -> Assignment or Cancellation; None for an empty (unknown) item."""
    which = item.WhichOneof("item")
    if which == "assign":
        a = item.assign
        return Assignment(
            task_id=a.task_id,
            job_id=a.job_id,
            attempt=a.attempt,
            setup=a.spec.setup,
            run=a.spec.run,
            # Secrets are environment variables like envs, and win over an env of the same name.
            envs={**a.spec.envs, **a.spec.secrets},
            workdir=a.spec.workdir,
            gpu_indices=tuple(a.gpu_indices),
            has_workdir=a.has_workdir,
            timeout_s=a.spec.timeout_s,
            rank=a.rank,
            num_nodes=a.num_nodes or 1,
            node_addresses=tuple(a.node_addresses),
        )
    if which == "cancel":
        c = item.cancel
        return Cancellation(task_id=c.task_id, attempt=c.attempt, reason=c.reason, rank=c.rank)
    return None


def capacity_to_proto(cap: HostCapacity) -> common_pb2.Capacity:
    """Detected capacity -> ``styx.v1.Capacity``."""
    return common_pb2.Capacity(
        cpus=cap.cpus,
        memory_gib=cap.memory_gib,
        gpus=[common_pb2.Gpu(index=g.index, name=g.name, memory_gib=g.memory_gib) for g in cap.gpus],
    )


def status_to_proto(node_id: str, report: StatusReport) -> agent_pb2.ReportTaskStatusRequest:
    """A status report -> ``ReportTaskStatusRequest`` (request_id "<task>/<attempt>/<STATE>")."""
    return agent_pb2.ReportTaskStatusRequest(
        request_id=report.request_id,
        node_id=node_id,
        task_id=report.task_id,
        attempt=report.attempt,
        state=_STATE[report.state],
        exit_code=report.exit_code or 0,
        has_exit_code=report.exit_code is not None,
        message=report.message,
        rank=report.rank,
    )
