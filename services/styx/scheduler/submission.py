"""SubmitJob: validate a job and store its tasks as PENDING, in group-commit rounds.

Concurrent SubmitJobs share one transaction (``styx.common.group_commit``); a round is
bounded by its tasks, and a repeated request_id answers with the first job."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from styx.common.errors import InvalidArgument
from styx.common.group_commit import GroupCommit
from styx.common.ids import new_id
from styx.common.store import bulk_insert
from styx.scheduler import tables as t
from styx.scheduler.model import (
    PENDING,
    TaskRecord,
    TaskSpec,
    resources_to_json,
    validate_job,
)
from styx.scheduler.transitions import Transitions

MAX_WORKDIR_BYTES = 64 * 1024 * 1024
# Most tasks one SubmitJob group-commit round writes (one transaction; a bigger job goes alone).
MAX_GROUP_TASKS = 2000



@dataclass(frozen=True)
class _Submission:
    """One SubmitJob's validated job, waiting for its group-commit round."""

    job_id: str
    request_id: str
    name: str
    specs: list[TaskSpec]
    workdir: bytes


def _task_row(r: TaskRecord, stamp: float) -> dict[str, Any]:
    """A new task's row in the tasks table."""
    return {
        "task_id": r.task_id,
        "job_id": r.job_id,
        "seq": r.seq,
        "name": r.spec.name,
        "spec_json": r.spec.to_json(),
        "resources_json": resources_to_json(r.spec.resources),
        "priority": r.spec.priority,
        "state": PENDING,
        "blocked": bool(r.spec.depends_on),
        "attempt": 0,
        "node_id": "",
        "gpu_indices_json": "[]",
        "failure_reason": "",
        "agent_ended": False,
        "released": False,
        "created_at": stamp,
        "failures": 0,
        "node_losses": 0,
        "num_nodes": r.spec.num_nodes,
        "ranks_json": "",
    }


class Submission(Transitions):
    """The submission part of ``Scheduler``."""

    _submits: GroupCommit[_Submission, list[TaskRecord] | str]

    def submit_job(
        self, request_id: str, name: str, specs: list[TaskSpec], workdir: bytes = b""
    ) -> tuple[str, list[TaskRecord]]:
        """Store a job's tasks as PENDING; a repeated request_id returns the first job."""
        if not request_id or len(request_id) > 128:
            raise InvalidArgument("request_id: required, 1-128 characters (a UUID is fine)")
        if len(workdir) > MAX_WORKDIR_BYTES:
            raise InvalidArgument(
                f"job.workdir_archive: {len(workdir) / 2**20:.1f} MiB is over the "
                f"{MAX_WORKDIR_BYTES // 2**20} MiB limit; exclude large files with .styxignore"
            )
        specs = validate_job(specs)
        if any(s.secrets for s in specs):
            box = self.secret_box
            specs = [replace(s, secrets=box.seal(s.secrets)) if s.secrets else s for s in specs]
        job_name = name or specs[0].name
        sub = _Submission(new_id("j"), request_id, job_name, specs, workdir)
        outcome = self._submits.run(sub)
        if isinstance(outcome, str):  # lost a race with the same request_id: the winner's job
            return outcome, self.list_tasks(job_id=outcome, limit=10**6, oldest_first=True)
        self._notify()
        self.wake()
        return sub.job_id, outcome

    def _write_submissions(self, subs: Sequence[_Submission]) -> list[list[TaskRecord] | str | BaseException]:
        """One group-commit round of SubmitJob: every job of the round in one transaction.

        A request_id already stored answers with its job (one query for the round). One
        taken meanwhile (a job of the same round, another replica) fails the transaction;
        the round is then written again one job per transaction, so only that job answers
        with the winner's id.
        """
        try:
            with self._lock, self._engine.begin() as conn:
                jobs = t.jobs.c
                taken = dict(
                    conn.execute(
                        select(jobs.request_id, jobs.job_id).where(jobs.request_id.in_({s.request_id for s in subs}))
                    ).all()
                )
                fresh = [s for s in subs if s.request_id not in taken]
                written = iter(self._insert_jobs(conn, fresh) if fresh else [])
                return [taken[s.request_id] if s.request_id in taken else next(written) for s in subs]
        except IntegrityError as exc:
            if len(subs) > 1:
                return [outcome for sub in subs for outcome in self._write_submissions([sub])]
            winner = self._job_by_request(subs[0].request_id)
            return [winner if winner is not None else exc]

    def _insert_jobs(self, conn: Any, subs: Sequence[_Submission]) -> list[list[TaskRecord]]:
        stamp = self._clock.now()
        conn.execute(
            insert(t.jobs),
            [{"job_id": s.job_id, "request_id": s.request_id, "name": s.name, "created_at": stamp} for s in subs],
        )
        seq = self._reserve_seqs(conn, sum(len(s.specs) for s in subs))
        per_job: list[list[TaskRecord]] = []
        for sub in subs:
            per_job.append(
                [
                    TaskRecord(new_id("t"), sub.job_id, seq + i, spec, PENDING, created_at=stamp, job_name=sub.name)
                    for i, spec in enumerate(sub.specs)
                ]
            )
            seq += len(sub.specs)
        workdirs = [{"job_id": s.job_id, "data": s.workdir} for s in subs if s.workdir]
        if workdirs:
            conn.execute(insert(t.workdirs), workdirs)
        records = [r for job in per_job for r in job]
        bulk_insert(conn, t.tasks, [_task_row(r, stamp) for r in records])
        edges = [
            {"job_id": r.job_id, "task_id": r.task_id, "dep_name": dep} for r in records for dep in r.spec.depends_on
        ]
        bulk_insert(conn, t.deps, edges)
        self._record_events(conn, [("SUBMITTED", r, "") for r in records])
        return per_job

    def _job_by_request(self, request_id: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(select(t.jobs.c.job_id).where(t.jobs.c.request_id == request_id)).scalar()

    def _reserve_seqs(self, conn: Any, count: int) -> int:
        """Reserve ``count`` consecutive submission numbers; returns the first."""
        value = conn.execute(
            update(t.counters)
            .where(t.counters.c.name == "task_seq")
            .values(value=t.counters.c.value + count)
            .returning(t.counters.c.value)
        ).scalar_one()
        return int(value) - count + 1
