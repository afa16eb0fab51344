"""The provider interface: what a provider plugin implements, in one documented module.

A provider turns "one instance of this offer" into a running machine with a Styx agent on
it, and removes it again. Plugins return an object with the operations of ``Provider``
from the ``styx_provider`` hook (see ``styx.provisioner.hookspecs``); they need not
inherit from anything, the Protocol only documents and type-checks the shape.

Only the frozen dataclasses below (and ``styx.common.offers.Offer``) cross the boundary between the provisioner and a
provider, never protobuf messages, so a plugin depends on this module alone. This module
imports nothing heavy (no grpc, no SQLAlchemy): the CLI and plugins import it cheaply.

Errors: a provider raises ``ProviderError`` with a ``kind``; the broker fails over to the
next offer on CAPACITY and QUOTA only. Any other exception is reported as INTERNAL.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# The one Offer of the code base; re-exported here so a plugin needs this module alone.
from styx.common.offers import Offer

__all__ = [
    "AgentLaunch",
    "InstanceStatus",
    "Offer",
    "Provider",
    "ProviderError",
    "ProviderErrorKind",
    "ProviderInstance",
    "ProviderStatus",
]


@dataclass(frozen=True)
class ProviderStatus:
    """Whether a provider can create instances now; when not, why and what to do."""

    enabled: bool
    reason: str = ""
    hint: str = ""


@dataclass(frozen=True)
class AgentLaunch:
    """What a new node's agent needs to join the control plane.

    ``token`` is a secret: it is excluded from ``repr`` so that logging this object never
    leaks it. Providers must pass it to the agent through its environment (``STYX_TOKEN``)
    or an equally private channel, never on a command line others can read.
    """

    scheduler_endpoint: str
    broker_endpoint: str
    token: str = field(default="", repr=False)
    #: PEM of the CA the control plane's TLS certificates chain to ("" when it serves
    #: plaintext); boot scripts install it so new agents verify the services they dial.
    tls_ca_pem: str = field(default="", repr=False)


class InstanceStatus(enum.Enum):
    """What a provider observes about one of its instances."""

    PENDING = "pending"
    RUNNING = "running"
    #: Stopped (deallocated) but still there: not gone, so reconcile keeps its record.
    STOPPED = "stopped"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


#: Label the provisioner puts on every instance it creates (in ``create``'s ``labels``):
#: the id of the control plane that owns it. Providers tag it like any label and report
#: it back in ``ProviderInstance.plane_id``, so control planes sharing one cloud account
#: or project never take each other's instances for leaks.
PLANE_LABEL = "styx-plane"


@dataclass(frozen=True)
class ProviderInstance:
    """An instance as the provider sees it (from ``list_instances``)."""

    instance_id: str
    node_id: str
    status: InstanceStatus
    #: The ``PLANE_LABEL`` tag of the instance; empty when it has none.
    plane_id: str = ""


class ProviderErrorKind(enum.Enum):
    """Class of a provider error; mirrors ``styx.v1.ProviderErrorKind``."""

    CAPACITY = "capacity"
    QUOTA = "quota"
    AUTH = "auth"
    INVALID = "invalid"
    INTERNAL = "internal"


class ProviderError(Exception):
    """A provider operation failed. ``message`` is shown to users: never put secrets in it."""

    def __init__(self, kind: ProviderErrorKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message


@runtime_checkable
class Provider(Protocol):
    """Operations every provider implements. All may block; the provisioner calls them off
    the request path (``create`` and ``terminate`` in background threads) and may call them
    from several threads at once, so implementations must be thread-safe.
    """

    #: Plugin name, e.g. "local", "aws": lower case, unique, used in offers and ``infra``.
    name: str

    def check(self) -> ProviderStatus:
        """Report whether the provider can create instances now (SDK installed, credentials
        present ...). Must be quick and must not raise; a disabled provider gives a reason a
        user understands and a hint, e.g. ``pip install 'styx[aws]'``.
        """
        ...

    def offers(self) -> list[Offer]:
        """List the offers this provider can create; every offer's ``provider`` is ``name``."""
        ...

    def create(
        self,
        *,
        node_id: str,
        offer: Offer,
        spot: bool,
        labels: Mapping[str, str],
        request_id: str,
        agent_launch: AgentLaunch,
    ) -> str:
        """Create one instance of ``offer`` whose agent registers as ``node_id``; return the
        provider's instance id once the instance exists (its agent may still be booting).

        Idempotent on ``request_id``: pass it to the cloud as the idempotency key (EC2
        ClientToken, GCE requestId ...) so that a retried create, e.g. after a provisioner
        restart, returns the first instance instead of creating a second one. Tag the
        instance with ``node_id`` and ``labels``. Raise ``ProviderError`` on failure.
        """
        ...

    def terminate(self, instance_id: str) -> None:
        """Terminate an instance and wait until it is gone or going. Terminating an
        instance that no longer exists succeeds. Raise ``ProviderError`` on failure.
        """
        ...

    def list_instances(self) -> list[ProviderInstance]:
        """List the live instances this provider created for Styx (found by their tags), so
        the reconcile loop can notice dead instances and terminate leaked ones.
        """
        ...
