"""Contract harness for the AWS provider: the real boto3 against a moto server.

The provider talks to the plain moto endpoint (no shim), so the idempotency test proves the
provider's own request-id tag lookup, not an endpoint honouring ClientToken (moto does not).
Ground truth is read from moto with a separate boto3 client.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from styx.provider import Offer, Provider
from styx.provisioner import bootstrap

REGION = "us-east-1"


class AwsHarness:
    """The AWS plugin pointed at moto; one region, fast polling, no retries."""

    name = "aws"
    supports_spot = True

    def __init__(self) -> None:
        from fakes.aws_moto import shared_moto
        from styx_plugins.aws.config import AwsConfig
        from styx_plugins.aws.provider import AwsProvider

        self.moto = shared_moto()
        self.moto.reset()
        self._provider = AwsProvider(
            AwsConfig(
                regions=(REGION,),
                images={"*": "ami-0123456789abcdef0"},
                endpoint_url=self.moto.moto_endpoint,
                credentials=("testing", "testing"),
                poll_s=0.05,
                create_timeout_s=20,
                max_attempts=1,
            )
        )

    def provider(self) -> Provider:
        return self._provider

    def offer(self) -> Offer:
        return Offer(provider="aws", region=REGION, zone="us-east-1a", instance_type="t3.medium", cpus=2, memory_gib=4)

    def live_instances(self) -> dict[str, str]:
        found = self.moto.styx_instances(states=["pending", "running", "stopping", "stopped"])
        return {i["InstanceId"]: {t["Key"]: t["Value"] for t in i["Tags"]}["styx-node-id"] for i in found}

    def is_spot(self, instance_id: str) -> bool:
        reply = self.moto.client(REGION).describe_instances(InstanceIds=[instance_id])
        return reply["Reservations"][0]["Instances"][0].get("InstanceLifecycle") == "spot"

    def boot_env(self, instance_id: str) -> dict[str, str]:
        return bootstrap.parse_startup_env(self.moto.user_data(instance_id))

    def close(self) -> None:
        live = list(self.live_instances())
        if live:
            self.moto.client(REGION).terminate_instances(InstanceIds=live)


def make_harness(tmp_path: Path) -> AwsHarness:
    """Contract-suite entry point (see conftest.py); skips without boto3 / moto."""
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    return AwsHarness()
