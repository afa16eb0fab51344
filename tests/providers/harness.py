"""What the provider contract suite needs from each provider's test harness.

A harness builds the real provider plugin pointed at a test endpoint (the local machine,
a moto server, a REST fake) and can read the ground truth from that endpoint, so the
suite checks what the cloud holds, not what the provider says it holds.
"""

from __future__ import annotations

from typing import Protocol

from styx.provider import AgentLaunch, Offer, Provider

LAUNCH = AgentLaunch(scheduler_endpoint="127.0.0.1:1", broker_endpoint="127.0.0.1:2", token="contract-secret")


class ProviderHarness(Protocol):
    """One provider under test."""

    #: Provider name, e.g. "local", "aws".
    name: str
    #: Whether create(spot=True) must produce spot / preemptible capacity.
    supports_spot: bool

    def provider(self) -> Provider:
        """The plugin's provider object, configured against the test endpoint."""
        ...

    def offer(self) -> Offer:
        """An offer the endpoint can create."""
        ...

    def live_instances(self) -> dict[str, str]:
        """Ground truth: instance id -> node id of every live Styx-tagged instance."""
        ...

    def is_spot(self, instance_id: str) -> bool:
        """Ground truth: whether the instance was created as spot / preemptible."""
        ...

    def boot_env(self, instance_id: str) -> dict[str, str]:
        """The agent settings the instance's boot script carries (empty for local)."""
        ...

    def close(self) -> None:
        """Release everything the harness started."""
        ...
