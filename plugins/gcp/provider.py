"""The GCP provider: nodes are Compute Engine instances created with google-cloud-compute.

Each node is one VM named ``styx-<node id>`` in the offer's zone, labelled
``styx-managed=true``, ``styx-node-id``, ``styx-request-id`` (plus the caller's labels made
valid for GCE), booted with Styx's shared startup script (metadata ``startup-script``),
which installs and starts the agent with a node-scoped token.

Idempotency, three layers deep: ``create`` first looks for a live instance labelled with
the request id and returns it; otherwise it inserts with a ``requestId`` derived from the
Styx request id (uuid5), which GCE deduplicates; and the deterministic name makes a
second insert for the node fail with 409 rather than create a twin.

Spot: ``scheduling.provisioningModel=SPOT`` with ``instanceTerminationAction=DELETE``, so
a preempted VM disappears and the reconcile loop reports its node gone.

The SDK (``google.cloud.compute_v1``, ~2.5 s of CPU to import) is imported on first use,
never when the plugin loads; ``check()`` only looks for it and resolves credentials.
Settings and credentials: see ``styx_plugins.gcp.config``. Thread-safe.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from styx.common.clock import Clock
from styx.provider import ProviderError, ProviderErrorKind, ProviderStatus
from styx.provider.base import ProviderBase
from styx.provider.boot import boot_script
from styx.provider.capabilities import Capabilities
from styx.provider.check import CachedCheck
from styx.provider.hooks import hookimpl
from styx.provider.types import PLANE_LABEL, CreateRequest, InstanceStatus, Offer, ProviderInstance
from styx_plugins.gcp import errors, naming
from styx_plugins.gcp.catalog import N1_ACCELERATORS
from styx_plugins.gcp.config import INSTALL_HINT, ConfigError, GcpSettings, resolve_credentials

log = logging.getLogger(__name__)

NAME = "gcp"
#: Seconds one API call may take (waits on operations are bounded separately).
CALL_TIMEOUT_S = 60.0
#: How long a check() result is reused: the reconcile loop calls check() every few seconds.
STATUS_TTL_S = 60.0
# GCE instance status -> what the provisioner needs to know. A stopped VM (GCE says
# TERMINATED, or STOPPED / SUSPENDED) still exists and bills its disk, so it is reported as
# not running but alive (PENDING): reconcile then neither forgets it nor calls it gone.
_STATUS = {
    "PROVISIONING": InstanceStatus.PENDING,
    "STAGING": InstanceStatus.PENDING,
    "REPAIRING": InstanceStatus.PENDING,
    "RUNNING": InstanceStatus.RUNNING,
    "STOPPING": InstanceStatus.PENDING,
    "SUSPENDING": InstanceStatus.PENDING,
    "SUSPENDED": InstanceStatus.PENDING,
    "STOPPED": InstanceStatus.PENDING,
    "TERMINATED": InstanceStatus.PENDING,
}
_STARTING = frozenset({"PROVISIONING", "STAGING", "REPAIRING", ""})


@dataclass(frozen=True)
class _Api:
    """The SDK module and clients, built once per provider."""

    compute: Any  # the google.cloud.compute_v1 module
    instances: Any  # compute_v1.InstancesClient
    operations: Any  # compute_v1.ZoneOperationsClient
    machine_types: Any  # compute_v1.MachineTypesClient (catalog only)
    accelerator_types: Any  # compute_v1.AcceleratorTypesClient (catalog only)
    project: str
    settings: GcpSettings


class GcpProvider(ProviderBase):
    """Creates, lists and deletes Styx's Compute Engine instances."""

    name = NAME
    capabilities = Capabilities(stop_start=True, spot=True, multi_node=True, images=True, catalog=True)

    def __init__(self, settings: GcpSettings | None = None, poll_s: float = 1.0, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._given = settings
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._api_cache: _Api | None = None
        self._check = CachedCheck(self._check_now, STATUS_TTL_S, clock=self.clock)

    # -- configuration ---------------------------------------------------------------------

    def _settings(self) -> GcpSettings:
        return self._given or GcpSettings.from_env()

    def check(self) -> ProviderStatus:
        """Enabled when google-cloud-compute is installed, settings parse, and credentials and
        a project are found. Does not import the SDK or call the API; never raises.
        """
        return self._check()

    def _check_now(self) -> ProviderStatus:
        try:
            if importlib.util.find_spec("google.cloud.compute_v1") is None:
                raise ModuleNotFoundError("google.cloud.compute_v1")
        except (ModuleNotFoundError, ValueError):
            return ProviderStatus(False, "google-cloud-compute is not installed", INSTALL_HINT)
        try:
            resolve_credentials(self._settings())
        except ConfigError as exc:
            return ProviderStatus(False, exc.reason, exc.hint)
        return ProviderStatus(True)

    def _api(self) -> _Api:
        with self._lock:
            if self._api_cache is not None:
                return self._api_cache
            try:
                settings = self._settings()
                credentials, project = resolve_credentials(settings)
            except ConfigError as exc:
                raise ProviderError(ProviderErrorKind.AUTH, f"{exc.reason}; {exc.hint}") from exc
            try:
                from google.cloud import compute_v1
            except ImportError as exc:
                message = f"google-cloud-compute is missing; {INSTALL_HINT}"
                raise ProviderError(ProviderErrorKind.INVALID, message) from exc
            options = {"api_endpoint": settings.endpoint} if settings.endpoint else None
            # REST is the library's only transport. Operations are polled with our own
            # ZoneOperationsClient (built with the same endpoint): the SDK's built-in poller
            # would ignore client_options and poll the public host.
            self._api_cache = _Api(
                compute=compute_v1,
                instances=compute_v1.InstancesClient(credentials=credentials, client_options=options),
                operations=compute_v1.ZoneOperationsClient(credentials=credentials, client_options=options),
                machine_types=compute_v1.MachineTypesClient(credentials=credentials, client_options=options),
                accelerator_types=compute_v1.AcceleratorTypesClient(credentials=credentials, client_options=options),
                project=project,
                settings=settings,
            )
            return self._api_cache

    # -- Provider interface ----------------------------------------------------------------

    def catalog(self, regions: Iterable[str] | None = None, include_unpriced: bool = False) -> list[Offer]:
        """Offers of every machine type offered in each zone of ``regions`` (default: every
        region the project sees), from machineTypes.aggregatedList (plus
        acceleratorTypes.aggregatedList for the GPUs attachable to N1 types), priced from the
        broker's built-in catalog; types it does not price are left out unless
        ``include_unpriced`` (then at price 0). See ``styx_plugins.gcp.catalog`` for how a
        price is chosen. Feed the result to the broker's ImportCatalog to refresh the GCP
        catalog.
        """
        from styx_plugins.gcp.catalog import build_catalog

        api = self._api()
        wanted = list(regions) if regions else None
        try:
            machine_types = list(
                api.machine_types.aggregated_list(
                    request=api.compute.AggregatedListMachineTypesRequest(project=api.project), timeout=CALL_TIMEOUT_S
                )
            )
        except Exception as exc:
            raise errors.from_api_error(exc, "list machine types") from exc
        try:
            accelerator_types = list(
                api.accelerator_types.aggregated_list(
                    request=api.compute.AggregatedListAcceleratorTypesRequest(project=api.project),
                    timeout=CALL_TIMEOUT_S,
                )
            )
        except Exception as exc:
            raise errors.from_api_error(exc, "list accelerator types") from exc
        return build_catalog(machine_types, accelerator_types, wanted, include_unpriced=include_unpriced)

    def create_instance(self, request: CreateRequest) -> str:
        """Create (or find, for a retried request) the node's VM and wait until it runs."""
        offer, node_id, request_id = request.offer, request.node_id, request.request_id
        if not offer.zone:
            message = f"offer {offer.place} has no zone; GCE creates VMs in a zone"
            raise ProviderError(ProviderErrorKind.INVALID, message)
        api = self._api()
        deadline = time.monotonic() + api.settings.create_timeout_s
        zone = offer.zone
        name = naming.instance_name(node_id)
        tags = naming.instance_labels(node_id, request_id, dict(request.labels))
        action = f"create {name} in {zone}"
        found = self._find_by_request(api, zone, tags[naming.LABEL_REQUEST_ID])
        if found is not None:
            log.info("reusing instance of this request", extra={"node_id": node_id, "instance": found.name})
            return self._await_running(api, zone, found.name, deadline, action)
        resource = self._instance_resource(api, request, name, tags)
        insert = api.compute.InsertInstanceRequest(
            project=api.project,
            zone=zone,
            instance_resource=resource,
            request_id=naming.request_uuid("insert", request_id),
        )
        try:
            operation = api.instances.insert_unary(request=insert, timeout=CALL_TIMEOUT_S)
        except Exception as exc:
            if not errors.is_conflict(exc):
                raise errors.from_api_error(exc, action) from exc
            # The name is taken: ours from an earlier attempt (adopt it) or someone else's.
            current = self._get(api, zone, name)
            if current is None or current.labels.get(naming.LABEL_REQUEST_ID) != tags[naming.LABEL_REQUEST_ID]:
                raise ProviderError(
                    ProviderErrorKind.INVALID,
                    f"{action}: an instance named {name} already exists and was not created by this request",
                ) from exc
            return self._await_running(api, zone, name, deadline, action)
        self._wait(api, zone, operation, deadline, action)
        return self._await_running(api, zone, name, deadline, action)

    def terminate(self, instance_id: str) -> None:
        """Delete the VM and wait for the delete operation; an absent VM is success."""
        api, zone, name = self._resolve(instance_id)
        action = f"delete {name} in {zone}"
        try:
            operation = api.instances.delete_unary(
                project=api.project, zone=zone, instance=name, timeout=CALL_TIMEOUT_S
            )
        except Exception as exc:
            if errors.is_not_found(exc):
                return
            raise errors.from_api_error(exc, action) from exc
        try:
            self._wait(api, zone, operation, time.monotonic() + api.settings.delete_timeout_s, action)
        except ProviderError as exc:
            if exc.kind is ProviderErrorKind.INVALID and "NOT_FOUND" in exc.message:
                return  # deleted meanwhile by someone else
            raise

    def list_instances(self) -> list[ProviderInstance]:
        """Every Styx-labelled VM of the project, in every zone (one aggregatedList call)."""
        api = self._api()
        request = api.compute.AggregatedListInstancesRequest(
            project=api.project, filter=f'labels.{naming.LABEL_MANAGED} = "true"'
        )
        out = []
        try:
            for scope, scoped in api.instances.aggregated_list(request=request, timeout=CALL_TIMEOUT_S):
                for inst in scoped.instances:
                    zone = naming.zone_of(inst.zone or scope)
                    out.append(
                        ProviderInstance(
                            instance_id=naming.instance_id(zone, inst.name),
                            node_id=_node_id_of(inst),
                            status=_STATUS.get(inst.status, InstanceStatus.PENDING),
                            plane_id=dict(inst.labels).get(PLANE_LABEL, ""),
                        )
                    )
        except Exception as exc:
            raise errors.from_api_error(exc, "list instances") from exc
        return sorted(out, key=lambda i: i.instance_id)

    def stop(self, instance_id: str) -> None:
        """Stop the VM (its disk is kept and still billed); returns once it is stopped."""
        self._power(instance_id, "stop")

    def start(self, instance_id: str) -> None:
        """Start a stopped VM; returns once it runs (its agent boots again from the script)."""
        self._power(instance_id, "start")

    # -- helpers ---------------------------------------------------------------------------

    def _resolve(self, instance_id: str) -> tuple[_Api, str, str]:
        parsed = naming.parse_instance_id(instance_id)
        if parsed is None:
            raise ProviderError(ProviderErrorKind.INVALID, f"{instance_id!r} is not a gcp instance id (<zone>/<name>)")
        return self._api(), parsed[0], parsed[1]

    def _power(self, instance_id: str, verb: str) -> None:
        api, zone, name = self._resolve(instance_id)
        action = f"{verb} {name} in {zone}"
        method = api.instances.stop_unary if verb == "stop" else api.instances.start_unary
        try:
            operation = method(project=api.project, zone=zone, instance=name, timeout=CALL_TIMEOUT_S)
        except Exception as exc:
            raise errors.from_api_error(exc, action) from exc
        deadline = time.monotonic() + api.settings.create_timeout_s
        self._wait(api, zone, operation, deadline, action)
        if verb == "start":
            self._await_running(api, zone, name, deadline, action)

    def _find_by_request(self, api: _Api, zone: str, request_label: str) -> Any | None:
        request = api.compute.ListInstancesRequest(
            project=api.project, zone=zone, filter=f'labels.{naming.LABEL_REQUEST_ID} = "{request_label}"'
        )
        try:
            for inst in api.instances.list(request=request, timeout=CALL_TIMEOUT_S):
                if inst.status not in ("STOPPING", "SUSPENDING"):
                    return inst
        except Exception as exc:
            raise errors.from_api_error(exc, f"look up instances in {zone}") from exc
        return None

    def _get(self, api: _Api, zone: str, name: str) -> Any | None:
        try:
            return api.instances.get(project=api.project, zone=zone, instance=name, timeout=CALL_TIMEOUT_S)
        except Exception as exc:
            if errors.is_not_found(exc):
                return None
            raise errors.from_api_error(exc, f"get {name} in {zone}") from exc

    def _wait(self, api: _Api, zone: str, operation: Any, deadline: float, action: str) -> None:
        """Wait (bounded) until a zone operation is DONE; raise its error if it failed."""
        done = api.compute.Operation.Status.DONE
        while operation.status != done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderError(ProviderErrorKind.INTERNAL, f"{action}: operation {operation.name} did not finish")
            try:
                # zoneOperations.wait returns when the operation is DONE or after ~2 minutes.
                operation = api.operations.wait(
                    project=api.project, zone=zone, operation=operation.name, timeout=min(remaining, 150.0)
                )
            except Exception as exc:
                raise errors.from_api_error(exc, action) from exc
        failure = errors.from_operation(operation, action)
        if failure is not None:
            raise failure

    def _await_running(self, api: _Api, zone: str, name: str, deadline: float, action: str) -> str:
        """Poll until the VM is RUNNING; a VM that vanishes or stops while starting failed."""
        delay = min(0.2, self._poll_s)
        while True:
            inst = self._get(api, zone, name)
            status = "" if inst is None else str(inst.status)
            if status == "RUNNING":
                return naming.instance_id(zone, name)
            if inst is None or status not in _STARTING:
                # Typically a spot VM preempted while booting (or deleted by hand).
                state = "vanished" if inst is None else f"is {status}"
                raise ProviderError(ProviderErrorKind.CAPACITY, f"{action}: the instance {state} while starting")
            if time.monotonic() + delay > deadline:
                self._delete_quietly(api, zone, name)
                raise ProviderError(ProviderErrorKind.INTERNAL, f"{action}: the instance did not reach RUNNING in time")
            time.sleep(delay)
            delay = min(delay * 2, self._poll_s * 5)

    def _delete_quietly(self, api: _Api, zone: str, name: str) -> None:
        # Best effort: if this fails too, the reconcile loop deletes the unowned VM later.
        try:
            api.instances.delete_unary(project=api.project, zone=zone, instance=name, timeout=CALL_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not delete %s/%s after a failed start: %s", zone, name, type(exc).__name__)

    def _instance_resource(self, api: _Api, request: CreateRequest, name: str, labels: dict[str, str]) -> Any:
        c, s = api.compute, api.settings
        offer, zone, spot = request.offer, request.offer.zone, request.spot
        script = boot_script(NAME, request, extra_env={"STYX_INSTANCE_ID": naming.instance_id(zone, name)})
        gpus = offer.accelerator_count > 0
        disk = c.AttachedDisk(
            boot=True,
            auto_delete=True,  # the disk goes with the VM: nothing left to bill after delete
            initialize_params=c.AttachedDiskInitializeParams(
                source_image=s.gpu_image if gpus else s.image,
                disk_size_gb=s.disk_gb,
                disk_type=f"zones/{zone}/diskTypes/{s.disk_type}",
                labels=labels,
            ),
        )
        nic = c.NetworkInterface(network=s.network)
        if s.subnetwork:
            nic.subnetwork = s.subnetwork
        if s.external_ip:
            nic.access_configs = [c.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
        scheduling = c.Scheduling()
        if spot:
            scheduling.provisioning_model = "SPOT"
            scheduling.instance_termination_action = "DELETE"
            scheduling.automatic_restart = False  # required for SPOT
            scheduling.on_host_maintenance = "TERMINATE"
        elif gpus:
            scheduling.on_host_maintenance = "TERMINATE"  # GPU VMs cannot live-migrate
        resource = c.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{offer.instance_type}",
            disks=[disk],
            network_interfaces=[nic],
            scheduling=scheduling,
            labels=labels,
            metadata=c.Metadata(
                items=[
                    c.Items(key=naming.META_STARTUP, value=script),
                    c.Items(key=naming.META_NODE_ID, value=request.node_id),
                    c.Items(key=naming.META_REQUEST_ID, value=request.request_id),
                ]
            ),
        )
        accelerator = N1_ACCELERATORS.get(offer.accelerator_name.upper())
        if gpus and offer.instance_type.startswith("n1-") and accelerator:
            resource.guest_accelerators = [
                c.AcceleratorConfig(
                    accelerator_type=f"zones/{zone}/acceleratorTypes/{accelerator}",
                    accelerator_count=offer.accelerator_count,
                )
            ]
        if s.service_account:
            resource.service_accounts = [
                c.ServiceAccount(email=s.service_account, scopes=["https://www.googleapis.com/auth/cloud-platform"])
            ]
        return resource


def _node_id_of(inst: Any) -> str:
    """The exact node id from metadata; the label (possibly hashed) as a fallback."""
    for item in inst.metadata.items:
        if item.key == naming.META_NODE_ID:
            return str(item.value)
    return str(inst.labels.get(naming.LABEL_NODE_ID, ""))


@hookimpl
def styx_provider() -> GcpProvider:
    """Contribute the GCP provider (cheap: nothing is imported or called until used)."""
    return GcpProvider()
