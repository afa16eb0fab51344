"""Settings of the AWS provider, read from the environment (validated here, not by EC2).

Credentials are NOT read here: boto3's standard chain finds them (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, an instance role ...). The EC2 endpoint can be
overridden with boto3's own ``AWS_ENDPOINT_URL_EC2`` (or ``AWS_ENDPOINT_URL``), which is
how the tests point the real SDK at a moto server.

Environment:
- ``STYX_AWS_REGIONS``: comma-separated regions Styx creates in and lists (default: the
  regions of the broker's built-in catalog). Creating outside them is refused, because the
  reconcile loop would not see such an instance.
- ``STYX_AWS_IMAGE_ID``: an AMI id for every region (``ami-0123...``), or per region
  (``us-east-1=ami-a,us-west-2=ami-b``). Default: Canonical's Ubuntu 24.04 LTS image,
  resolved by EC2 from the public SSM parameter for the offer's architecture.
- ``STYX_AWS_SECURITY_GROUP_IDS``: comma-separated security groups (default: the VPC's default).
- ``STYX_AWS_SUBNET_IDS``: ``zone=subnet-id`` pairs, comma-separated (default: the default VPC).
- ``STYX_AWS_KEY_NAME``: EC2 key pair for SSH (default: none; agents dial out, no SSH needed).
- ``STYX_AWS_IAM_INSTANCE_PROFILE``: instance profile name or ARN (default: none).
- ``STYX_AWS_DISK_GB``: root volume size in GB (default: the image's, 8 GB for Ubuntu).
- ``STYX_AWS_CREATE_TIMEOUT_SECONDS``: how long create waits for "running" (default 300).
- ``STYX_AWS_POLL_SECONDS``: state polling interval (default 2).
- ``STYX_AWS_MAX_ATTEMPTS``: botocore attempts per API call, retries included (default 4).
- ``STYX_AWS_CONFIG_FILE``: a YAML / JSON file with any of these settings (``regions:
  [us-east-1]``); the environment wins over it (``styx.provider.config``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from styx.provider import ConfigError, ProviderConfig

log = logging.getLogger(__name__)

# Canonical publishes the current Ubuntu image ids as public SSM parameters; EC2 resolves a
# "resolve:ssm:" image id itself at launch, so the default is right in every region.
UBUNTU_SSM = "resolve:ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id"
# Used only when the broker's built-in catalog cannot be read (same regions as its "aws").
FALLBACK_REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1")

__all__ = ["AwsConfig", "ConfigError", "default_regions"]


@dataclass(frozen=True)
class AwsConfig:
    """Everything the provider needs besides credentials."""

    regions: tuple[str, ...] = FALLBACK_REGIONS
    #: region -> AMI id; "*" applies to every region.
    images: dict[str, str] = field(default_factory=dict)
    security_group_ids: tuple[str, ...] = ()
    #: zone -> subnet id.
    subnets: dict[str, str] = field(default_factory=dict)
    key_name: str = ""
    iam_instance_profile: str = ""
    disk_gb: int = 0
    create_timeout_s: float = 300.0
    poll_s: float = 2.0
    max_attempts: int = 4
    #: Explicit endpoint (tests); None lets boto3 use AWS_ENDPOINT_URL_EC2 or the real one.
    endpoint_url: str | None = None
    #: Explicit (access key id, secret) (tests); None uses boto3's credential chain.
    credentials: tuple[str, str] | None = field(default=None, repr=False)

    def image_for(self, region: str, arch: str) -> str:
        """The AMI to launch in ``region`` for CPU architecture ``arch``."""
        image = self.images.get(region) or self.images.get("*")
        if image:
            return image
        return UBUNTU_SSM.format(arch="arm64" if arch in ("arm64", "aarch64") else "amd64")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AwsConfig:
        """Read the ``STYX_AWS_*`` settings (environment over ``STYX_AWS_CONFIG_FILE``);
        raise ConfigError on a malformed one."""
        c = ProviderConfig.load("STYX_AWS_", env)
        image = c.get("STYX_AWS_IMAGE_ID")
        images = c.pairs("STYX_AWS_IMAGE_ID", "us-east-1=ami-0123") if "=" in image else {"*": image}
        return cls(
            regions=tuple(c.csv("STYX_AWS_REGIONS") or default_regions()),
            images=images if image else {},
            security_group_ids=tuple(c.csv("STYX_AWS_SECURITY_GROUP_IDS")),
            subnets=c.pairs("STYX_AWS_SUBNET_IDS", "us-east-1a=subnet-0123"),
            key_name=c.get("STYX_AWS_KEY_NAME"),
            iam_instance_profile=c.get("STYX_AWS_IAM_INSTANCE_PROFILE"),
            disk_gb=c.integer("STYX_AWS_DISK_GB", 0),
            create_timeout_s=c.number("STYX_AWS_CREATE_TIMEOUT_SECONDS", 300.0),
            poll_s=c.number("STYX_AWS_POLL_SECONDS", 2.0),
            max_attempts=max(1, c.integer("STYX_AWS_MAX_ATTEMPTS", 4)),
        )


def default_regions() -> list[str]:
    """The regions of the broker's built-in AWS catalog (the regions Styx offers by default)."""
    try:
        from importlib import resources

        text = resources.files("styx.broker").joinpath("data/builtin_offers.json").read_text()
        return sorted(json.loads(text)["providers"]["aws"]["regions"])
    except Exception as exc:  # a trimmed install without the broker still works
        log.debug("built-in catalog unreadable (%s); using the fallback AWS regions", exc)
        return list(FALLBACK_REGIONS)
