"""The provisioner's domain types: operations, instances, providers' status, and their checks."""

from __future__ import annotations

import enum
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from styx.common.errors import InvalidArgument
from styx.common.ids import new_id
from styx.provider import (
    Offer,
    ProviderError,
    ProviderErrorKind,
)

log = logging.getLogger(__name__)


_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class OperationKind(enum.Enum):
    """What an operation does."""

    PROVISION = "provision"
    TERMINATE = "terminate"
    STOP = "stop"
    START = "start"


class OperationState(enum.Enum):
    """Lifecycle of an operation; DONE and FAILED are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True for DONE and FAILED."""
        return self in (OperationState.DONE, OperationState.FAILED)


class InstanceState(enum.Enum):
    """Lifecycle of an instance as the provisioner records it."""

    PENDING = "pending"
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Instance:
    """An instance the provisioner created (or is creating) for a node."""

    node_id: str
    provider: str
    instance_id: str
    offer: Offer
    state: InstanceState
    spot: bool
    labels: Mapping[str, str]
    created_at: float


@dataclass(frozen=True)
class Operation:
    """A provision or terminate action and where it stands."""

    operation_id: str
    request_id: str
    kind: OperationKind
    state: OperationState
    node_id: str
    created_at: float
    updated_at: float
    instance: Instance | None = None
    error_kind: ProviderErrorKind | None = None
    error_message: str = ""


@dataclass(frozen=True)
class ProviderInfo:
    """A loaded provider and whether it is usable."""

    name: str
    enabled: bool
    reason: str = ""
    hint: str = ""
    #: The capabilities the provider declares (``Capabilities.names()``), e.g. ("spot",).
    capabilities: tuple[str, ...] = ()


@dataclass
class WorkerThreads:
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# Plane ids become GCE label values and EC2/Azure tag values: keep to the strictest (GCE).
PLANE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def check_node_id(node_id: str) -> None:
    if not node_id:
        raise InvalidArgument("node_id: required; the id the new node's agent registers as")
    if not _NODE_ID.match(node_id):
        # Node ids end up in file names and command lines, so keep them to a safe alphabet.
        raise InvalidArgument(
            f"node_id: {node_id!r} is not valid; use 1-63 characters of letters, digits, '.', '_', '-', "
            "starting with a letter or digit"
        )


def describe_failure(provider: str, exc: Exception) -> tuple[ProviderErrorKind, str]:
    if isinstance(exc, ProviderError):
        return exc.kind, exc.message
    ref = new_id("err")
    log.error("provider %s raised an unexpected error", provider, exc_info=exc, extra={"ref": ref})
    # Unexpected errors may carry anything (paths, credentials): only the reference leaves.
    return ProviderErrorKind.INTERNAL, f"provider {provider} failed unexpectedly (reference {ref}); see the log"


def instance_from_row(row: Mapping[Any, Any]) -> Instance:
    offer = Offer(**json.loads(str(row["offer_json"])))
    return Instance(
        node_id=str(row["node_id"]),
        provider=str(row["provider"]),
        instance_id=str(row["instance_id"] or ""),
        offer=offer,
        state=InstanceState(row["state"]),
        spot=bool(row["spot"]),
        labels=json.loads(str(row["labels_json"] or "{}")),
        created_at=float(row["created_at"]),
    )
