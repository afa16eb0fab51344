"""The provisioning attempts log: every row of ``broker_provisions``, newest first."""

from __future__ import annotations

import json

from sqlalchemy import Engine, select

from styx.broker import tables as t
from styx.broker.model import Attempt
from styx.common.errors import InvalidArgument
from styx.common.offers import Offer


def list_attempts(
    engine: Engine, task_id: str = "", allocation_id: str = "", node_id: str = "", limit: int = 100
) -> list[Attempt]:
    """Provisioning attempts, newest first, filtered by task, allocation and node."""
    if limit > 10000:
        raise InvalidArgument(f"limit: at most 10000, got {limit}")
    c = t.provisions.c
    query = select(t.provisions)
    if task_id:
        query = query.where(c.task_id == task_id)
    if allocation_id:
        query = query.where(c.allocation_id == allocation_id)
    if node_id:
        query = query.where(c.node_id == node_id)
    query = query.order_by(c.created_at.desc(), c.node_id.desc()).limit(limit or 100)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        Attempt(
            node_id=r.node_id,
            allocation_id=r.allocation_id,
            task_id=r.task_id,
            offer=Offer(**json.loads(r.offer_json)),
            spot=r.spot,
            hourly_price=r.hourly_price,
            state=r.state,
            error=r.error,
            error_kind=r.error_kind,
            operation_id=r.operation_id,
            started_at=r.created_at,
            updated_at=r.updated_at or r.created_at,
        )
        for r in rows
    ]
