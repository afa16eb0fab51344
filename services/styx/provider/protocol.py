"""The Provider protocol: the operations every provider implements.

Plugins return an object of this shape from the ``styx_provider`` hook. They need not
inherit from anything (the Protocol documents and type-checks the shape), but inheriting
``styx.provider.ProviderBase`` saves writing ``create``'s keyword signature and the
defaults. Optional operations are declared in ``capabilities`` (see capabilities.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from styx.provider.types import AgentLaunch, Offer, ProviderInstance, ProviderStatus


@runtime_checkable
class Provider(Protocol):
    """Operations every provider implements. All may block; the provisioner calls them off
    the request path (``create`` and ``terminate`` in background threads) and may call them
    from several threads at once, so implementations must be thread-safe.

    Errors: raise ``ProviderError`` with a ``kind``; the broker fails over to the next
    offer on CAPACITY and QUOTA only. Any other exception is reported as INTERNAL.
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
