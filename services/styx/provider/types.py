"""The values that cross the boundary between the provisioner and a provider.

Only these frozen dataclasses (and ``Offer``) pass between the provisioner and a plugin,
never protobuf messages, so a plugin depends on ``styx.provider`` alone. Nothing heavy is
imported here (no grpc, no SQLAlchemy): the CLI and plugins import it cheaply.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

# The one Offer of the code base; re-exported so that a plugin needs this package alone.
from styx.common.auth import mint_node_token
from styx.common.offers import Offer
from styx.common.resources import IMAGE_LABEL, IMAGE_PREFIX

#: Label the provisioner puts on every instance it creates (in ``create``'s ``labels``):
#: the id of the control plane that owns it. Providers tag it like any label and report
#: it back in ``ProviderInstance.plane_id``, so control planes sharing one cloud account
#: or project never take each other's instances for leaks.
PLANE_LABEL = "styx-plane"


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

    def node_token(self, node_id: str) -> str:
        """A token for ``node_id``'s agent alone (the agents' RPCs, naming that node): what an
        agent started directly (no join step) gets instead of ``token``, which opens every RPC."""
        return mint_node_token(self.token, node_id)


@dataclass(frozen=True)
class CreateRequest:
    """One ``create`` call as a value: what ``ProviderBase.create_instance`` receives."""

    node_id: str
    offer: Offer
    spot: bool
    labels: Mapping[str, str]
    request_id: str
    agent_launch: AgentLaunch

    @property
    def plane_id(self) -> str:
        """The owning control plane's id (the ``PLANE_LABEL`` label), "" when absent."""
        return str(self.labels.get(PLANE_LABEL, ""))

    @property
    def image(self) -> str:
        """The container image the task asked the node to run (its ``image_id`` without
        "docker:"); "" for the provider's default. Only providers declaring the "images"
        capability are asked for one."""
        return str(self.labels.get(IMAGE_LABEL, "")).removeprefix(IMAGE_PREFIX)


class InstanceStatus(enum.Enum):
    """What a provider observes about one of its instances."""

    PENDING = "pending"
    RUNNING = "running"
    #: Stopped (deallocated) but still there: not gone, so reconcile keeps its record.
    STOPPED = "stopped"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class ProviderInstance:
    """An instance as the provider sees it (from ``list_instances``)."""

    instance_id: str
    node_id: str
    status: InstanceStatus
    #: The ``PLANE_LABEL`` tag of the instance; empty when it has none.
    plane_id: str = ""


#: The kit's name for what ``list_instances`` returns.
InstanceInfo = ProviderInstance


class ProviderErrorKind(enum.Enum):
    """Class of a provider error; mirrors ``styx.v1.ProviderErrorKind``.

    The broker fails over to the next offer on CAPACITY and QUOTA only. INTERNAL covers
    transient faults too (an endpoint that did not answer): the operation fails and the
    caller may retry it.
    """

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
