"""The Azure provider: nodes are Azure virtual machines (azure-mgmt-compute + azure-identity).

What ``create`` makes, in one ``PUT virtualMachines/{name}`` (see config.py for settings):

- a VM named ``styx-<node id>`` (deterministic, so a retried create after a provisioner
  restart addresses the same VM: ARM treats a second PUT of a name as an update, never a
  second VM), in the configured resource group, ``location`` = the offer's region and
  ``zones`` = the offer's zone ("1", or "eastus-1" style, the trailing number is used);
- tags ``styx-managed=true``, ``styx-node-id``, ``styx-request-id`` and the labels
  (sanitised for Azure's tag rules);
- a network interface created *by the compute service itself* from
  ``networkProfile.networkInterfaceConfigurations`` (``networkApiVersion`` 2020-11-01) in
  the configured subnet, with ``deleteOption: Delete``: no azure-mgmt-network dependency,
  and the NIC (and the optional public IP) go away with the VM, so nothing is left to leak;
- an OS disk from the image with ``deleteOption: Delete``;
- ``osProfile.customData`` = base64 of ``bootstrap.startup_script`` (cloud-init runs it at
  first boot: it installs Styx and starts the agent with a node-scoped token);
- spot: ``priority: Spot``, ``evictionPolicy: Delete``, ``billingProfile.maxPrice: -1``
  (pay at most the on-demand price; an evicted VM is deleted, the reconciler notices).

Idempotency: before any PUT the VM of that name is read; one carrying the same
``styx-request-id`` tag is that create's VM and is waited for instead of created again.

Instance ids are the VMs' ARM resource ids, built from the configured subscription and
resource group (ARM sometimes upper-cases the group in ids it returns; ids built here stay
stable across create and list). ``terminate`` deletes only VMs tagged ``styx-managed``.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from styx.common.clock import Clock
from styx.provider import ProviderError, ProviderErrorKind, ProviderStatus
from styx.provider.base import ProviderBase
from styx.provider.boot import boot_script
from styx.provider.capabilities import Capabilities
from styx.provider.check import CachedCheck
from styx.provider.config import ConfigError
from styx.provider.hooks import hookimpl
from styx.provider.tags import TAG_MANAGED, TAG_NODE, TAG_REQUEST, TagRules, TextRule, digest, instance_tags, user_tags
from styx.provider.types import PLANE_LABEL, CreateRequest, InstanceStatus, Offer, ProviderInstance
from styx_plugins.azure.config import AzureSettings
from styx_plugins.azure.errors import classify

log = logging.getLogger(__name__)

NAME = "azure"
INSTALL_HINT = "pip install 'styx[azure]'"
ARM_SCOPE = "https://management.azure.com/.default"
# Token that the client sends to an http:// test endpoint (never a real credential).
STATIC_TEST_TOKEN = "styx-static-test-token"
# How long a credential probe result is trusted by check() (it runs every reconcile pass).
_CRED_OK_TTL_S = 300.0
_CRED_FAIL_TTL_S = 30.0
_VM_PATH = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachines/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
# Azure tag names may not contain these characters (they become '_'), nor start with these
# prefixes (such names get "x-"); names are cut to 512 and values to 256 characters.
AZURE_TAGS = TagRules(
    key=TextRule(max_len=512, invalid=r"[<>%&\\?/]"),
    value=TextRule(max_len=256),
    reserved_prefixes=("microsoft", "azure", "windows"),
    rename_reserved="x-",
)


def vm_name(node_id: str) -> str:
    """The VM name of ``node_id``: ``styx-<node id>``, or a sanitised form plus a hash.

    Node ids may hold '_' and '.', which a VM/host name should not; when sanitising
    changes the id (or it is too long) a short hash of the original keeps names distinct.
    """
    base = re.sub(r"[^A-Za-z0-9-]", "-", node_id).strip("-")
    if base == node_id and len(base) <= 50:
        return f"styx-{base}"
    return f"styx-{base[:40].strip('-')}-{digest(node_id, 8)}"


def azure_zone(zone: str) -> str:
    """Azure's zone number from an offer zone: "2" and "eastus-2" both give "2"."""
    return zone.rsplit("-", 1)[-1].strip() if zone else ""


def sanitise_tags(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels as Azure tags (see ``AZURE_TAGS``); Styx's own tags cannot be overridden."""
    return user_tags(labels, AZURE_TAGS)


def _wire(obj: Any) -> Mapping[str, Any]:
    """The wire-format (camelCase) view of a VM returned by the SDK.

    azure-mgmt-compute >= 39 models are MutableMappings keyed by wire names; older
    (msrest) models serialise to the same shape.
    """
    if isinstance(obj, Mapping):
        return obj
    serialize = getattr(obj, "serialize", None)
    return serialize(keep_readonly=True) if callable(serialize) else {}


def _provisioning_state(vm: Any) -> str:
    props = _wire(vm).get("properties") or {}
    return str(props.get("provisioningState") or "")


def _tags(vm: Any) -> dict[str, str]:
    return dict(_wire(vm).get("tags") or {})


class AzureProvider(ProviderBase):
    """Creates Styx nodes as Azure VMs. Thread-safe: one SDK client, stateless calls."""

    name = NAME
    capabilities = Capabilities(stop_start=True, spot=True, multi_node=True, images=True, catalog=True)

    def __init__(self, env: Mapping[str, str] | None = None, clock: Clock | None = None) -> None:
        super().__init__(clock)
        # ``env`` (default: the process environment) is read once, on first use.
        self._env = env
        # Re-entrant: building the client reads the settings under the same lock.
        self._lock = threading.RLock()
        self._settings: AzureSettings | None = None
        self._client: Any = None
        self._ssh_key = ""
        self._credential_check = CachedCheck(self._probe_credential, _CRED_OK_TTL_S, _CRED_FAIL_TTL_S, self.clock)

    # -- configuration and SDK ---------------------------------------------------------

    @property
    def settings(self) -> AzureSettings:
        """The provider's settings (read from the environment on first use)."""
        with self._lock:
            if self._settings is None:
                self._settings = AzureSettings.from_env(self._env)
            return self._settings

    def _credential(self) -> Any:
        s = self.settings
        if s.plain_http:
            return _static_test_credential()
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def _compute(self) -> Any:
        """The ComputeManagementClient, built once (lazily: importing the SDK costs time)."""
        s = self.settings
        with self._lock:
            if self._client is not None:
                return self._client
            from azure.mgmt.compute import ComputeManagementClient

            kwargs: dict[str, Any] = {}
            if s.endpoint:
                kwargs["base_url"] = s.endpoint
            if s.plain_http:
                # azure-core refuses bearer tokens over http; the test endpoint is local.
                kwargs["per_call_policies"] = [_allow_http_policy()]
            if s.poll_s is not None:
                kwargs["polling_interval"] = s.poll_s
            self._client = ComputeManagementClient(self._credential(), s.subscription_id, **kwargs)
            return self._client

    # -- Provider interface --------------------------------------------------------------

    def check(self) -> ProviderStatus:
        """SDK importable, required settings present, and (real Azure) a token obtainable."""
        try:
            # find_spec, not import: the SDK costs ~60 MB of memory, paid only once configured.
            for module in ("azure.identity", "azure.mgmt.compute"):
                try:
                    found = importlib.util.find_spec(module) is not None
                except ModuleNotFoundError:  # the parent package ("azure") is missing
                    found = False
                if not found:
                    return ProviderStatus(False, f"the Azure SDK is not installed ({module})", INSTALL_HINT)
            try:
                s = self.settings
            except ConfigError as exc:
                return ProviderStatus(False, exc.reason, exc.hint)
            missing = s.missing()
            if missing:
                return ProviderStatus(
                    False,
                    f"not configured: {', '.join(missing)} unset",
                    "export AZURE_SUBSCRIPTION_ID, STYX_AZURE_RESOURCE_GROUP (an existing group) and "
                    "STYX_AZURE_SUBNET_ID (an existing subnet's resource id); see README 'Cloud: Azure'",
                )
            try:
                s.image_reference()
            except ValueError as exc:
                return ProviderStatus(False, str(exc), "set STYX_AZURE_IMAGE to publisher:offer:sku:version")
            if s.plain_http:
                return ProviderStatus(True)
            return self._credential_check()
        except Exception as exc:  # check() must never raise
            return ProviderStatus(False, f"check failed: {type(exc).__name__}", "see the provisioner log")

    def _probe_credential(self) -> ProviderStatus:
        try:
            self._credential().get_token(ARM_SCOPE)
        except Exception as exc:
            log.info("azure credential probe failed: %s", type(exc).__name__)
            return ProviderStatus(
                False,
                "no Azure credentials found (DefaultAzureCredential)",
                "run 'az login', or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET, "
                "or use a managed identity",
            )
        return ProviderStatus(True)

    def create_instance(self, request: CreateRequest) -> str:
        """Create (or find again) the VM of the request's node and wait until it runs."""
        s = self.settings
        offer, node_id, request_id = request.offer, request.node_id, request.request_id
        if not offer.region:
            raise ProviderError(ProviderErrorKind.INVALID, "azure offers need a region (location), e.g. eastus")
        name = vm_name(node_id)
        client = self._compute()
        deadline = time.monotonic() + s.create_timeout_s
        existing = self._get(name)
        if existing is not None:
            tags = _tags(existing)
            state = _provisioning_state(existing)
            if tags.get(TAG_REQUEST) != AZURE_TAGS.value.apply(request_id):
                raise ProviderError(
                    ProviderErrorKind.INVALID,
                    f"VM {name} already exists for another request (node ids must not be reused)",
                )
            if state not in ("Failed", "Deleting"):
                # The first attempt's VM (a provisioner restart between PUT and commit).
                log.info("found the VM of this request", extra={"node_id": node_id, "vm": name})
                self._wait_succeeded(name, deadline)
                return self.instance_id(name)
            # A failed or vanishing VM of this request: clear it, then create afresh.
            self._delete(name, deadline)
        body = self._vm_body(name, request)
        try:
            poller = client.virtual_machines.begin_create_or_update(s.resource_group, name, body)
            poller.wait(max(deadline - time.monotonic(), 0.0))
            if not poller.done():
                raise ProviderError(
                    ProviderErrorKind.INTERNAL, f"VM {name} was not running after {s.create_timeout_s:g} s"
                )
            poller.result()
        except Exception as exc:
            error = classify(exc, f"create VM {name} ({offer.place})")
            self._cleanup_failed(name)
            raise error from exc
        log.info("azure VM created", extra={"node_id": node_id, "vm": name, "spot": request.spot})
        return self.instance_id(name)

    def terminate(self, instance_id: str) -> None:
        """Delete the VM (its NIC and OS disk go with it) and wait until it is gone."""
        name = self._name_of(instance_id)
        vm = self._get(name)
        if vm is None:
            return
        if _tags(vm).get(TAG_MANAGED) != "true":
            raise ProviderError(ProviderErrorKind.INVALID, f"VM {name} is not tagged {TAG_MANAGED}=true; not deleting")
        self._delete(name, time.monotonic() + self.settings.delete_timeout_s)

    def list_instances(self) -> list[ProviderInstance]:
        """Every VM of the resource group tagged styx-managed=true (all regions at once)."""
        s = self.settings
        try:
            vms = list(self._compute().virtual_machines.list(s.resource_group))
        except Exception as exc:
            raise classify(exc, "list VMs") from exc
        out = []
        for vm in vms:
            wire = _wire(vm)
            tags = dict(wire.get("tags") or {})
            if tags.get(TAG_MANAGED) != "true":
                continue
            out.append(
                ProviderInstance(
                    self.instance_id(str(wire.get("name"))),
                    tags.get(TAG_NODE, ""),
                    _status_of(_provisioning_state(vm)),
                    tags.get(PLANE_LABEL, ""),
                )
            )
        return out

    def stop(self, instance_id: str) -> None:
        """Deallocate the VM (compute billing stops; the OS disk is kept and billed)."""
        self._power(instance_id, "deallocate")

    def start(self, instance_id: str) -> None:
        """Start a deallocated VM again; its boot script has already run, the agent restarts
        only if the image or an earlier boot installed it as a service.
        """
        self._power(instance_id, "start")

    def catalog(self, regions: list[str] | None = None, include_unpriced: bool = False) -> list[Offer]:
        """Offers of every VM size each of ``regions`` (default: STYX_AZURE_REGIONS, else the
        built-in catalog's azure regions) offers this subscription, from the Resource SKUs
        API, priced from the broker's built-in catalog; sizes it does not price are left out
        unless ``include_unpriced`` (then at price 0). See catalog.py for the mapping. Feed
        the result to the broker's ImportCatalog to refresh the Azure catalog."""
        from styx_plugins.azure.catalog import build_catalog, builtin_regions

        wanted = [r.strip().lower() for r in regions or () if r.strip()]
        wanted = wanted or list(self.settings.regions) or builtin_regions()
        if not wanted:
            raise ProviderError(
                ProviderErrorKind.INVALID, "no Azure regions to read: set STYX_AZURE_REGIONS, e.g. eastus,westeurope"
            )
        return build_catalog(wanted, self._list_skus, include_unpriced=include_unpriced)

    # -- helpers -------------------------------------------------------------------------

    def _list_skus(self, region: str) -> list[Any]:
        """The Resource SKUs of ``region`` (every page), as the SDK returns them."""
        # The region goes into an OData string literal: refuse anything but a region name.
        if not re.fullmatch(r"[a-z0-9]+", region):
            raise ProviderError(ProviderErrorKind.INVALID, f"{region!r} is not an Azure region name, e.g. eastus")
        try:
            return list(self._compute().resource_skus.list(filter=f"location eq '{region}'"))
        except Exception as exc:
            raise classify(exc, f"list VM sizes (Resource SKUs) in {region}") from exc

    def instance_id(self, name: str) -> str:
        """The ARM resource id of VM ``name`` in the configured group."""
        s = self.settings
        return _VM_PATH.format(sub=s.subscription_id, rg=s.resource_group, name=name)

    def _name_of(self, instance_id: str) -> str:
        match = _ID_RE.match(instance_id)
        if match is None:
            if "/" in instance_id or not instance_id:
                raise ProviderError(ProviderErrorKind.INVALID, f"{instance_id!r} is not an Azure VM resource id")
            return instance_id  # a bare VM name in the configured resource group
        s = self.settings
        if match["sub"].lower() != s.subscription_id.lower() or match["rg"].lower() != s.resource_group.lower():
            raise ProviderError(
                ProviderErrorKind.INVALID,
                f"VM {match['name']} is outside the configured subscription / resource group",
            )
        return match["name"]

    def _get(self, name: str) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._compute().virtual_machines.get(self.settings.resource_group, name)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise classify(exc, f"get VM {name}") from exc

    def _wait_succeeded(self, name: str, deadline: float) -> None:
        """Poll a VM found mid-creation until it has succeeded (or failed, or vanished)."""
        interval = 0.2 if self.settings.plain_http else 5.0
        while True:
            vm = self._get(name)
            state = _provisioning_state(vm) if vm is not None else "Deleted"
            if state == "Succeeded" or state == "Updating":
                return
            if state in ("Failed", "Deleted", "Deleting"):
                raise ProviderError(ProviderErrorKind.INTERNAL, f"VM {name} is {state.lower()}; retry the request")
            if time.monotonic() > deadline:
                raise ProviderError(ProviderErrorKind.INTERNAL, f"VM {name} still {state} at the create deadline")
            time.sleep(interval)

    def _delete(self, name: str, deadline: float) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            poller = self._compute().virtual_machines.begin_delete(self.settings.resource_group, name)
            poller.wait(max(deadline - time.monotonic(), 0.0))
            if poller.done():
                poller.result()
            else:
                # Deletion is accepted and under way ("gone or going"); the reconciler will see it.
                log.warning("azure VM %s still deleting at the deadline", name)
        except ResourceNotFoundError:
            return
        except Exception as exc:
            raise classify(exc, f"delete VM {name}") from exc

    def _cleanup_failed(self, name: str) -> None:
        """After a failed create, delete what ARM kept (a VM in state Failed still holds a
        disk and a NIC); best effort: the reconciler removes anything left over.
        """
        try:
            vm = self._get(name)
            if vm is not None and _tags(vm).get(TAG_MANAGED) == "true":
                self._delete(name, time.monotonic() + self.settings.delete_timeout_s)
        except Exception as exc:
            log.warning("could not delete failed VM %s; the reconciler will retry: %s", name, exc)

    def _power(self, instance_id: str, action: str) -> None:
        name = self._name_of(instance_id)
        ops = self._compute().virtual_machines
        begin = ops.begin_deallocate if action == "deallocate" else ops.begin_start
        try:
            begin(self.settings.resource_group, name).result(timeout=self.settings.create_timeout_s)
        except Exception as exc:
            raise classify(exc, f"{action} VM {name}") from exc

    def _ssh_public_key(self) -> str:
        s = self.settings
        if s.ssh_public_key:
            return s.ssh_public_key
        with self._lock:
            if not self._ssh_key:
                self._ssh_key = _throwaway_ssh_key()
            return self._ssh_key

    def _vm_body(self, name: str, request: CreateRequest) -> dict[str, Any]:
        """The VirtualMachine resource as ARM's wire format (plain dicts are accepted)."""
        s = self.settings
        offer = request.offer
        subnet = s.subnet_for(offer.region)
        if not subnet:
            raise ProviderError(
                ProviderErrorKind.INVALID, f"no subnet for region {offer.region}: set STYX_AZURE_SUBNET_ID"
            )
        try:
            image = s.image_reference()
        except ValueError as exc:
            raise ProviderError(ProviderErrorKind.INVALID, str(exc)) from exc
        script = boot_script(NAME, request)
        tags = instance_tags(request.node_id, request.request_id, request.labels, AZURE_TAGS)
        ip_config: dict[str, Any] = {"subnet": {"id": subnet}, "primary": True}
        if s.public_ip:
            ip_config["publicIPAddressConfiguration"] = {
                "name": f"{name}-ip",
                "sku": {"name": "Standard"},
                "properties": {"deleteOption": "Delete", "publicIPAllocationMethod": "Static"},
            }
        os_disk: dict[str, Any] = {
            "createOption": "FromImage",
            "deleteOption": "Delete",
            "managedDisk": {"storageAccountType": s.os_disk_type},
        }
        if s.os_disk_gb:
            os_disk["diskSizeGB"] = s.os_disk_gb
        props: dict[str, Any] = {
            "hardwareProfile": {"vmSize": offer.instance_type},
            "storageProfile": {"imageReference": image, "osDisk": os_disk},
            "osProfile": {
                "computerName": name,
                "adminUsername": s.admin_username,
                "customData": base64.b64encode(script.encode()).decode("ascii"),
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {
                        "publicKeys": [
                            {
                                "path": f"/home/{s.admin_username}/.ssh/authorized_keys",
                                "keyData": self._ssh_public_key(),
                            }
                        ]
                    },
                },
            },
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {
                        "name": f"{name}-nic",
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [{"name": "ipconfig1", "properties": ip_config}],
                        },
                    }
                ],
            },
        }
        if request.spot:
            props.update({"priority": "Spot", "evictionPolicy": "Delete", "billingProfile": {"maxPrice": -1}})
        body: dict[str, Any] = {"location": offer.region, "tags": tags, "properties": props}
        zone = azure_zone(offer.zone)
        if zone:
            body["zones"] = [zone]
        return body


def _status_of(provisioning_state: str) -> InstanceStatus:
    if provisioning_state == "Creating":
        return InstanceStatus.PENDING
    if provisioning_state == "Deleting":
        return InstanceStatus.TERMINATING
    # Succeeded, Updating, Failed (still exists, still to be cleaned up), Migrating ...
    return InstanceStatus.RUNNING


def _static_test_credential() -> Any:
    """A TokenCredential with a fixed token, used ONLY for an http:// endpoint override."""
    from azure.core.credentials import AccessToken

    class StaticTestCredential:
        """Duck-typed TokenCredential: a fixed, non-secret token for a local test endpoint."""

        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            """The static token, valid for an hour."""
            return AccessToken(STATIC_TEST_TOKEN, int(time.time()) + 3600)

    return StaticTestCredential()


def _allow_http_policy() -> Any:
    """A per-call pipeline policy that lets the bearer policy send to an http:// endpoint."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class AllowHttp(SansIOHTTPPolicy):  # type: ignore[type-arg]  # generic only for typing
        """Turns off azure-core's https check (per-call policies run before the bearer one)."""

        def on_request(self, request: Any) -> None:
            """Mark the request as allowed over plain http."""
            request.context["enforce_https"] = False

    return AllowHttp()


def _throwaway_ssh_key() -> str:
    """An OpenSSH RSA public key whose private half is discarded: Azure requires a key for
    Linux VMs, Styx needs no login (the agent dials out), so nobody can log in.
    """
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError as exc:
        raise ProviderError(
            ProviderErrorKind.INVALID, "set STYX_AZURE_SSH_PUBLIC_KEY (cryptography is not installed)"
        ) from exc
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode("ascii") + " styx-throwaway"


@hookimpl
def styx_provider() -> AzureProvider:
    """Contribute the Azure provider (configured from the environment, SDK imported lazily)."""
    return AzureProvider()
