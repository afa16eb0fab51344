"""Settings of the Azure provider, read from the environment (no SDK imports here).

Required:
- ``AZURE_SUBSCRIPTION_ID``: the subscription VMs are created in (the Azure SDKs' and
  CLI's usual variable).
- ``STYX_AZURE_RESOURCE_GROUP``: an existing resource group that holds Styx's VMs (one
  group can hold resources of every region, so listing it finds every Styx VM).
- ``STYX_AZURE_SUBNET_ID``: resource id of an existing subnet the VMs' network interfaces
  join; ``STYX_AZURE_SUBNET_ID_<REGION>`` (e.g. ``STYX_AZURE_SUBNET_ID_WESTUS2``) overrides
  it per region, because a NIC must sit in a virtual network of the VM's own region.

Optional:
- ``STYX_AZURE_IMAGE``: ``publisher:offer:sku:version`` (the az CLI's URN form) or an image
  resource id (``/subscriptions/.../images/...`` or a gallery image version). Default
  ``DEFAULT_IMAGE`` (Ubuntu 22.04 LTS, Gen2).
- ``STYX_AZURE_PUBLIC_IP``: ``1`` gives each VM a Standard public IP (deleted with the VM);
  default ``0``: the subnet must provide outbound access (NAT gateway, firewall) so the
  agent can dial the control plane.
- ``STYX_AZURE_OS_DISK_TYPE`` (default ``StandardSSD_LRS``), ``STYX_AZURE_OS_DISK_GB``
  (default: the image's size).
- ``STYX_AZURE_ADMIN_USERNAME`` (default ``styx``), ``STYX_AZURE_SSH_PUBLIC_KEY`` (an
  OpenSSH public key line; default: a throwaway key whose private half is never kept, so
  nobody can log in: the agent dials out and needs no inbound SSH).
- ``STYX_AZURE_ENDPOINT``: Azure Resource Manager base URL instead of
  ``https://management.azure.com`` (sovereign clouds, Azure Stack, tests). An ``http://``
  endpoint (a local test fake) is used with a static bearer credential, never with real
  credentials, because a real token must not travel in plain text.
- ``STYX_AZURE_CREATE_TIMEOUT_SECONDS`` / ``STYX_AZURE_DELETE_TIMEOUT_SECONDS`` (default
  600 each): bounds on waiting for a VM to run / to be gone.
- ``STYX_AZURE_POLL_SECONDS``: seconds between polls of a long-running operation when Azure
  sends no ``Retry-After`` (SDK default 30).
- ``STYX_AZURE_REGIONS``: comma-separated regions (``eastus,westeurope``) whose VM sizes
  ``sky catalog refresh azure`` reads; default: the regions of the built-in catalog's
  azure offers (see catalog.py).
- ``STYX_AZURE_CONFIG_FILE``: a YAML / JSON file with any of these settings
  (``resource_group: styx``); the environment wins over it (``styx.provider.config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from styx.provider import ProviderConfig

# Ubuntu 22.04 LTS (Gen2) from Canonical; python3 is on it, and cloud-init runs customData.
DEFAULT_IMAGE = "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest"
DEFAULT_DISK_TYPE = "StandardSSD_LRS"
DEFAULT_ADMIN = "styx"
PUBLIC_ARM = "https://management.azure.com"


@dataclass(frozen=True)
class AzureSettings:
    """Everything the provider needs from its environment, validated once."""

    subscription_id: str = ""
    resource_group: str = ""
    subnet_id: str = ""
    subnet_by_region: Mapping[str, str] = field(default_factory=dict)
    image: str = DEFAULT_IMAGE
    public_ip: bool = False
    os_disk_type: str = DEFAULT_DISK_TYPE
    os_disk_gb: int = 0
    admin_username: str = DEFAULT_ADMIN
    ssh_public_key: str = field(default="", repr=False)
    endpoint: str = ""
    create_timeout_s: float = 600.0
    delete_timeout_s: float = 600.0
    poll_s: float | None = None
    regions: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AzureSettings:
        """Read the settings from ``env`` (default: the process environment) over
        ``STYX_AZURE_CONFIG_FILE``; raise ``ConfigError`` naming a malformed one."""
        c = ProviderConfig.load("STYX_AZURE_", env)
        poll = "STYX_AZURE_POLL_SECONDS"
        return cls(
            subscription_id=c.get("AZURE_SUBSCRIPTION_ID"),
            resource_group=c.get("STYX_AZURE_RESOURCE_GROUP"),
            subnet_id=c.get("STYX_AZURE_SUBNET_ID"),
            subnet_by_region=c.with_prefix("STYX_AZURE_SUBNET_ID_"),
            image=c.get("STYX_AZURE_IMAGE", DEFAULT_IMAGE),
            public_ip=c.flag("STYX_AZURE_PUBLIC_IP", False),
            os_disk_type=c.get("STYX_AZURE_OS_DISK_TYPE", DEFAULT_DISK_TYPE),
            os_disk_gb=c.integer("STYX_AZURE_OS_DISK_GB", 0),
            admin_username=c.get("STYX_AZURE_ADMIN_USERNAME", DEFAULT_ADMIN),
            ssh_public_key=c.get("STYX_AZURE_SSH_PUBLIC_KEY"),
            endpoint=c.get("STYX_AZURE_ENDPOINT").rstrip("/"),
            create_timeout_s=c.number("STYX_AZURE_CREATE_TIMEOUT_SECONDS", 600.0),
            delete_timeout_s=c.number("STYX_AZURE_DELETE_TIMEOUT_SECONDS", 600.0),
            poll_s=c.number(poll, 30.0) if c.is_set(poll) else None,
            regions=_regions(c.get("STYX_AZURE_REGIONS")),
        )

    @property
    def plain_http(self) -> bool:
        """True for an ``http://`` endpoint override: a local fake, never real Azure."""
        return self.endpoint.lower().startswith("http://")

    def missing(self) -> list[str]:
        """Names of required variables that are unset, for ``check()``."""
        out = []
        if not self.subscription_id:
            out.append("AZURE_SUBSCRIPTION_ID")
        if not self.resource_group:
            out.append("STYX_AZURE_RESOURCE_GROUP")
        if not self.subnet_id and not self.subnet_by_region:
            out.append("STYX_AZURE_SUBNET_ID")
        return out

    def subnet_for(self, region: str) -> str:
        """The subnet id for VMs of ``region`` (per-region override first)."""
        return self.subnet_by_region.get(region.lower(), "") or self.subnet_id

    def image_reference(self) -> dict[str, str]:
        """The ARM ``imageReference`` for ``image`` (URN or resource id)."""
        if self.image.startswith("/"):
            return {"id": self.image}
        parts = self.image.split(":")
        if len(parts) != 4 or not all(parts):
            raise ValueError(
                f"STYX_AZURE_IMAGE={self.image!r} is neither publisher:offer:sku:version nor an image resource id"
            )
        publisher, offer, sku, version = parts
        return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}


def _regions(text: str) -> tuple[str, ...]:
    # Region names are lower case in ARM ("eastus"); users may write "EastUS" as the portal does.
    out: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name and name not in out:
            out.append(name)
    return tuple(out)
