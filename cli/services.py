"""Clients for the broker and the provisioner, with the scheduler client's deadlines and errors.

Imported only by commands that call those services (this module imports grpc). The
endpoints come from the same place as the scheduler's (``styx_cli.config.resolve_target``):
the local plane knows all three; a remote plane needs ``STYX_BROKER_ENDPOINT`` /
``STYX_PROVISIONER_ENDPOINT`` (or ``broker_endpoint`` / ``provisioner_endpoint`` in
``$STYX_HOME/config.yaml``).
"""

from __future__ import annotations

from typing import Any

from styx.common.clients import open_channel
from styx_cli.client import SchedulerClient
from styx_cli.config import Target, resolve_target
from styx_cli.errors import EXIT_USAGE, CliError

# Where a remote plane's endpoint of each service is configured, for the error message.
_SETTINGS = {
    "broker": ("STYX_BROKER_ENDPOINT", "broker_endpoint"),
    "provisioner": ("STYX_PROVISIONER_ENDPOINT", "provisioner_endpoint"),
}


class ServiceClient(SchedulerClient):
    """A client of one service (broker or provisioner): same retries, deadlines and errors as
    the scheduler's client, with messages naming this service."""

    def __init__(self, target: Target, service: str, endpoint: str, stub_class: Any) -> None:
        # Deliberately not calling SchedulerClient.__init__: it would open a scheduler channel.
        self.target = target
        self.service = service
        self.endpoint = endpoint
        self._channel = open_channel(endpoint, target.token, tls_ca=target.tls_ca, plaintext=target.plaintext)
        self.stub = stub_class(self._channel)

    def __enter__(self) -> ServiceClient:
        return self


def endpoint_of(target: Target, service: str) -> str:
    """The configured endpoint of ``service``; a usage error saying how to set it when absent."""
    endpoint = getattr(target, service)
    if not endpoint:
        env, key = _SETTINGS[service]
        raise CliError(
            f"no {service} endpoint configured for the control plane at {target.scheduler}: "
            f"set {env} (or '{key}:' in $STYX_HOME/config.yaml)",
            EXIT_USAGE,
        )
    return str(endpoint)


def broker(target: Target | None = None) -> ServiceClient:
    """A ResourceBroker client for the configured (or local, started on demand) plane."""
    from styx.v1 import broker_pb2_grpc

    target = target or resolve_target()
    return ServiceClient(target, "broker", endpoint_of(target, "broker"), broker_pb2_grpc.ResourceBrokerStub)


def provisioner(target: Target | None = None) -> ServiceClient:
    """A Provisioner client for the configured (or local, started on demand) plane."""
    from styx.v1 import provisioner_pb2_grpc

    target = target or resolve_target()
    return ServiceClient(
        target, "provisioner", endpoint_of(target, "provisioner"), provisioner_pb2_grpc.ProvisionerStub
    )
