"""The boot script a cloud instance runs to become a Styx node, for a ``CreateRequest``.

Every cloud passes the same script (EC2 user data, GCE ``startup-script``, Azure
customData): see ``styx.provisioner.bootstrap`` for what it does. The join token in it is
minted here from the launch token, scoped to the request's node.
"""

from __future__ import annotations

from collections.abc import Mapping

from styx.provider.types import CreateRequest
from styx.provisioner import bootstrap

#: Re-exported for tests and harnesses that read a script back.
parse_startup_env = bootstrap.parse_startup_env


def agent_env(provider: str, request: CreateRequest, *, region: str = "", zone: str = "") -> dict[str, str]:
    """The environment the new node's agent runs with."""
    launch = request.agent_launch
    return bootstrap.agent_env(
        request.node_id,
        provider,
        launch.scheduler_endpoint,
        launch.broker_endpoint,
        launch.token,
        region=region or request.offer.region,
        zone=zone if zone else request.offer.zone,
        instance_type=request.offer.instance_type,
    )


def boot_script(
    provider: str,
    request: CreateRequest,
    *,
    region: str = "",
    zone: str = "",
    extra_env: Mapping[str, str] | None = None,
) -> str:
    """The bash boot script of the request's instance (``extra_env`` added to the agent's)."""
    env = {**agent_env(provider, request, region=region, zone=zone), **(extra_env or {})}
    return bootstrap.startup_script(env, ca_pem=request.agent_launch.tls_ca_pem)
