"""A small fake of Azure Resource Manager's Microsoft.Compute virtualMachines API, for tests.

It is a FAKE speaking the documented ARM REST wire format, used because no runnable ARM
(Azure's control plane) exists: the real azure-mgmt-compute client talks to it over HTTP
on 127.0.0.1 (port 0), unmodified, so the requests it sends and the responses it parses
are the real ones. What it implements is what the Styx Azure provider calls:

- ``PUT    .../resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}``: 201
  (create) or 200 (update of the same name: never a second VM) with the VM in
  ``provisioningState: Creating|Updating`` and ``Azure-AsyncOperation`` / ``Retry-After``
  headers; a second PUT that changes ``osProfile`` answers 409 PropertyChangeNotAllowed,
  as ARM does. Validates ``api-version``, the bearer header, the resource group, location,
  vmSize, imageReference, osProfile, a network profile, zones, spot settings, customData.
- ``GET .../virtualMachines/{vm}`` (``$expand=instanceView`` adds power state; 404
  ResourceNotFound), ``GET .../virtualMachines`` (pages of ``page_size`` with ``nextLink``).
  Like ARM, responses never carry ``osProfile.customData`` (write-only); the ground truth
  (``FakeVM.custom_data``) keeps it for tests.
- ``DELETE .../virtualMachines/{vm}``: 202 with ``Azure-AsyncOperation`` and ``Location``;
  204 when there is no such VM.
- ``POST .../virtualMachines/{vm}/deallocate|start``: 202 with ``Location`` only (the
  client polls the Location URL: 202 while running, 204 once done).
- ``GET .../locations/{loc}/operations/{id}``: ``{"status": "InProgress|Succeeded|Failed",
  "error": {...}}`` as ARM's Azure-AsyncOperation protocol documents.
- ``GET /subscriptions/{sub}/providers/Microsoft.Compute/skus?$filter=location eq '{loc}'``
  (Resource SKUs): the SKUs of ``SKU_REGIONS`` (``resource_skus(region)``: a handful of VM
  sizes with ``capabilities``, one size restricted ``NotAvailableForSubscription``, one
  zone-restricted, one size the built-in catalog does not price, one disk SKU), in pages of
  ``page_size`` with ``nextLink``; without ``$filter`` every region's SKUs.

An operation completes once polled ``op_polls`` times or ``op_seconds`` after it began
(so a client killed mid-poll still leaves a finished VM behind, like Azure would).
Faults for tests: ``fail_creates`` (synchronous 409 / asynchronous failed operation with an
ARM error code, per zone / location / size), ``hold_creates`` (record the VM, then keep the
PUT response until ``release_creates``), ``deny_auth``. ``AgentBooter`` plays the VMs'
first boot by running the agent their customData would start.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from styx.provisioner.bootstrap import parse_startup_env

SUBSCRIPTION = "00000000-0000-0000-0000-00000000a2e0"
RESOURCE_GROUP = "styx-test-rg"
SUBNET_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Network/"
    "virtualNetworks/styx-vnet/subnets/default"
)
_P = r"/subscriptions/(?P<sub>[^/]+)"
_LOC = _P + r"/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)"
_VMS = _P + r"/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/virtualMachines"
ROUTES = [
    ("vm_action", re.compile(f"^{_VMS}/(?P<name>[^/]+)/(?P<action>deallocate|start)$", re.I)),
    ("vm", re.compile(f"^{_VMS}/(?P<name>[^/]+)$", re.I)),
    ("vm_list", re.compile(f"^{_VMS}$", re.I)),
    ("operation", re.compile(_LOC + r"/operations/(?P<op>[^/]+)$", re.I)),
    ("operation_result", re.compile(_LOC + r"/operationResults/(?P<op>[^/]+)$", re.I)),
    ("skus", re.compile(_P + r"/providers/Microsoft\.Compute/skus$", re.I)),
]
# Regions whose Resource SKUs the fake lists.
SKU_REGIONS = ("eastus", "westeurope")
# The VM size listed but restricted NotAvailableForSubscription (type Location) everywhere.
RESTRICTED_SIZE = "Standard_NC24ads_A100_v4"
# A size the fake lists that the built-in catalog has no price for.
UNPRICED_SIZE = "Standard_D2ps_v5"
# (name, family, vCPUs, MemoryGB, GPUs, CPU architecture), as the SKU API reports them.
_VM_SIZES = (
    ("Standard_D2s_v5", "standardDSv5Family", 2, 8, 0, "x64"),
    ("Standard_D4s_v5", "standardDSv5Family", 4, 16, 0, "x64"),
    ("Standard_NC4as_T4_v3", "Standard NCASv3_T4 Family", 4, 28, 1, "x64"),
    (RESTRICTED_SIZE, "StandardNCADSA100v4Family", 24, 220, 1, "x64"),
    (UNPRICED_SIZE, "standardDPSv5Family", 2, 8, 0, "Arm64"),
)
_FILTER_RE = re.compile(r"^\s*location\s+eq\s+'(?P<loc>[^']*)'\s*$", re.I)


def resource_skus(region: str) -> list[dict[str, Any]]:
    """The Resource SKUs of ``region`` in ARM's documented shape ([] for other regions)."""
    if region.lower() not in SKU_REGIONS:
        return []
    out: list[dict[str, Any]] = []
    for name, family, cpus, memory, gpus, arch in _VM_SIZES:
        caps = [
            ("MaxResourceVolumeMB", "0"),
            ("OSVhdSizeMB", "1047552"),
            ("vCPUs", str(cpus)),
            ("MemoryPreservingMaintenanceSupported", "True"),
            ("HyperVGenerations", "V1,V2" if arch == "x64" else "V2"),
            ("MemoryGB", str(memory)),
            ("MaxDataDiskCount", "8"),
            ("CpuArchitectureType", arch),
            ("LowPriorityCapable", "True"),
            ("PremiumIO", "True"),
            ("vCPUsAvailable", str(cpus)),
            ("vCPUsPerCore", "2"),
            ("AcceleratedNetworkingEnabled", "True"),
        ]
        if gpus:
            caps.insert(6, ("GPUs", str(gpus)))
        restrictions: list[dict[str, Any]] = []
        if name == RESTRICTED_SIZE:
            restrictions.append(
                {
                    "type": "Location",
                    "values": [region],
                    "restrictionInfo": {"locations": [region]},
                    "reasonCode": "NotAvailableForSubscription",
                }
            )
        elif name == "Standard_D4s_v5" and region == "eastus":
            # Only zone 3 is closed: the size stays available in the region.
            restrictions.append(
                {
                    "type": "Zone",
                    "values": [region],
                    "restrictionInfo": {"locations": [region], "zones": ["3"]},
                    "reasonCode": "NotAvailableForSubscription",
                }
            )
        out.append(
            {
                "resourceType": "virtualMachines",
                "name": name,
                "tier": "Standard",
                "size": name.split("_", 1)[1],
                "family": family,
                "locations": [region],
                "locationInfo": [{"location": region, "zones": ["1", "2", "3"], "zoneDetails": []}],
                "capabilities": [{"name": k, "value": v} for k, v in caps],
                "restrictions": restrictions,
            }
        )
    out.append(
        {
            "resourceType": "disks",
            "name": "Premium_LRS",
            "tier": "Premium",
            "size": "P1",
            "family": "PremiumDisk",
            "locations": [region],
            "locationInfo": [{"location": region, "zones": ["1", "2", "3"], "zoneDetails": []}],
            "capabilities": [{"name": "MaxSizeGiB", "value": "4"}, {"name": "MaxIOps", "value": "120"}],
            "restrictions": [],
        }
    )
    return out


@dataclass
class FakeVM:
    """Ground truth of one VM as the fake holds it."""

    subscription: str
    resource_group: str
    name: str
    body: dict[str, Any]
    state: str = "Creating"
    power: str = "starting"
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        """The ARM resource id."""
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )

    @property
    def tags(self) -> dict[str, str]:
        """The VM's tags."""
        return dict(self.body.get("tags") or {})

    @property
    def properties(self) -> dict[str, Any]:
        """The VM's properties as sent."""
        return dict(self.body.get("properties") or {})

    @property
    def custom_data(self) -> str:
        """The decoded customData (the boot script)."""
        data = ((self.properties.get("osProfile") or {}).get("customData")) or ""
        return base64.b64decode(data).decode() if data else ""

    @property
    def is_spot(self) -> bool:
        """Whether it was created as a Spot VM with eviction policy Delete."""
        props = self.properties
        return props.get("priority") == "Spot" and props.get("evictionPolicy") == "Delete"

    @property
    def zones(self) -> list[str]:
        """The zones requested."""
        return list(self.body.get("zones") or [])

    def view(self, instance_view: bool = False) -> dict[str, Any]:
        """The VM as ARM returns it: customData is write-only and never returned."""
        props = copy.deepcopy(self.properties)
        (props.get("osProfile") or {}).pop("customData", None)
        props.update(provisioningState=self.state, vmId=self.vm_id, timeCreated=_iso(self.created_at))
        nics = (props.get("networkProfile") or {}).get("networkInterfaceConfigurations") or []
        if nics:
            props["networkProfile"]["networkInterfaces"] = [
                {
                    "id": f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                    f"/providers/Microsoft.Network/networkInterfaces/{nic.get('name')}",
                    "properties": {"primary": True, "deleteOption": "Delete"},
                }
                for nic in nics
            ]
        if instance_view:
            props["instanceView"] = {
                "statuses": [
                    {"code": f"ProvisioningState/{self.state.lower()}"},
                    {"code": f"PowerState/{self.power}"},
                ]
            }
        out = {
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": self.body.get("location"),
            "tags": self.tags,
            "properties": props,
        }
        if self.zones:
            out["zones"] = self.zones
        return out


@dataclass
class _Op:
    op_id: str
    kind: str  # create | update | delete | deallocate | start
    key: tuple[str, str, str]
    location: str
    started: float = field(default_factory=time.monotonic)
    polls: int = 0
    status: str = "InProgress"
    error: dict[str, str] | None = None


@dataclass
class _CreateFault:
    code: str
    message: str
    mode: str  # "sync": the PUT answers an error; "async": the operation fails, the VM stays Failed
    status: int
    zone: str | None
    location: str | None
    vm_size: str | None
    times: int | None

    def matches(self, body: Mapping[str, Any]) -> bool:
        zones = body.get("zones") or []
        size = ((body.get("properties") or {}).get("hardwareProfile") or {}).get("vmSize")
        return (
            (self.zone is None or self.zone in zones)
            and (self.location is None or self.location == body.get("location"))
            and (self.vm_size is None or self.vm_size == size)
            and (self.times is None or self.times > 0)
        )


class FakeAzureCompute:
    """The fake ARM endpoint (thread-safe). Use ``start()`` / ``close()`` or ``with``."""

    def __init__(
        self,
        subscription: str = SUBSCRIPTION,
        resource_groups: tuple[str, ...] = (RESOURCE_GROUP,),
        op_polls: int = 2,
        op_seconds: float = 1.0,
        page_size: int = 2,
    ) -> None:
        self.subscription = subscription
        self.resource_groups = {rg.lower() for rg in resource_groups}
        self.op_polls = op_polls
        self.op_seconds = op_seconds
        self.page_size = page_size
        self._lock = threading.RLock()
        self._vms: dict[tuple[str, str, str], FakeVM] = {}
        self._ops: dict[str, _Op] = {}
        self._faults: list[_CreateFault] = []
        self._hold = threading.Event()
        self._release = threading.Event()
        self._denied: str = ""
        #: Requests seen, as (method, path) — tests count PUTs with it.
        self.requests: list[tuple[str, str]] = []
        #: PUTs currently held by ``hold_creates``.
        self.held = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> FakeAzureCompute:
        """Serve on 127.0.0.1, a free port."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-arm", daemon=True)
        self._thread.start()
        return self

    @property
    def endpoint(self) -> str:
        """Base URL to pass as the ARM endpoint (``http://127.0.0.1:PORT``)."""
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        """Stop serving (held PUTs are released first)."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAzureCompute:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def env(self) -> dict[str, str]:
        """Environment that points the Styx Azure provider at this fake."""
        return {
            "AZURE_SUBSCRIPTION_ID": self.subscription,
            "STYX_AZURE_RESOURCE_GROUP": sorted(self.resource_groups)[0],
            "STYX_AZURE_SUBNET_ID": SUBNET_ID,
            "STYX_AZURE_ENDPOINT": self.endpoint,
            "STYX_AZURE_POLL_SECONDS": "0.05",
            "STYX_AZURE_SSH_PUBLIC_KEY": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7test styx-test",
        }

    # -- ground truth --------------------------------------------------------------------

    def vms(self, include_deleting: bool = True) -> list[FakeVM]:
        """Every VM the fake holds (after letting due operations finish)."""
        with self._lock:
            self._settle()
            return [v for v in self._vms.values() if include_deleting or v.state != "Deleting"]

    def vm(self, name: str) -> FakeVM | None:
        """The VM named ``name`` in any group, or None."""
        return next((v for v in self.vms() if v.name.lower() == name.lower()), None)

    def styx_vms(self) -> list[FakeVM]:
        """Live (not deleting) VMs tagged styx-managed=true."""
        return [v for v in self.vms(include_deleting=False) if v.tags.get("styx-managed") == "true"]

    def put_count(self) -> int:
        """How many VM PUTs the fake received."""
        with self._lock:
            return sum(1 for method, path in self.requests if method == "PUT")

    def delete_behind_back(self, name: str) -> None:
        """Remove a VM at once, as a user in the portal or a spot eviction would."""
        with self._lock:
            for key, vm in list(self._vms.items()):
                if vm.name.lower() == name.lower():
                    del self._vms[key]

    # -- faults --------------------------------------------------------------------------

    def fail_creates(
        self,
        code: str,
        message: str = "",
        *,
        mode: str = "async",
        status: int = 409,
        zone: str | None = None,
        location: str | None = None,
        vm_size: str | None = None,
        times: int | None = None,
    ) -> None:
        """Make matching creates fail with ARM error ``code`` (``times`` None = always)."""
        text = message or f"fake: {code} for this request"
        with self._lock:
            self._faults.append(_CreateFault(code, text, mode, status, zone, location, vm_size, times))

    def hold_creates(self) -> None:
        """From now on a create PUT records its VM, then waits for ``release_creates``."""
        self._release.clear()
        self._hold.set()

    def release_creates(self) -> None:
        """Let held PUTs answer, and stop holding new ones."""
        self._hold.clear()
        self._release.set()

    def deny_auth(self, code: str = "AuthorizationFailed") -> None:
        """Answer every request 403 with ``code`` ('' to stop)."""
        self._denied = code

    # -- request handling (called by the handler) -----------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str], body: bytes, base: str
    ) -> tuple[int, dict[str, str], Any]:
        """Serve one request; returns (status, headers, JSON body or None)."""
        with self._lock:
            self.requests.append((method, path))
            self._settle()
        if not headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        if self._denied:
            return _error(403, self._denied, "The client does not have authorization to perform this action.")
        if not query.get("api-version"):
            return _error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        for route, pattern in ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            groups = match.groupdict()
            if route in ("operation", "operation_result"):
                return self._get_operation(groups["op"], route == "operation_result", base, query)
            if route == "skus":
                return self._skus(groups, method, query, base, path)
            if groups["sub"].lower() != self.subscription.lower():
                return _error(404, "SubscriptionNotFound", f"The subscription '{groups['sub']}' could not be found.")
            if groups["rg"].lower() not in self.resource_groups:
                return _error(404, "ResourceGroupNotFound", f"Resource group '{groups['rg']}' could not be found.")
            if route == "vm_list" and method == "GET":
                return self._list(groups, query, base, path)
            if route == "vm" and method == "PUT":
                return self._put(groups, body, base)
            if route == "vm" and method == "GET":
                return self._get(groups, "instanceView" in (query.get("$expand") or [""])[0])
            if route == "vm" and method == "DELETE":
                return self._delete(groups, base)
            if route == "vm_action" and method == "POST":
                return self._power(groups, base)
            return _error(405, "MethodNotAllowed", f"{method} is not supported on this resource")
        return _error(404, "InvalidResourceType", f"no route for {path}")

    def wait_held(self) -> bool:
        """Block the PUT handler while creates are held; True when released in time."""
        return self._release.wait(120)

    def _key(self, groups: Mapping[str, str]) -> tuple[str, str, str]:
        return (groups["sub"].lower(), groups["rg"].lower(), groups["name"].lower())

    def _put(self, groups: Mapping[str, str], raw: bytes, base: str) -> tuple[int, dict[str, str], Any]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _error(400, "InvalidRequestContent", "The request content could not be deserialized.")
        problem = _validate(body)
        if problem:
            return _error(400, "InvalidParameter", problem)
        key = self._key(groups)
        with self._lock:
            existing = self._vms.get(key)
            if existing is not None:
                if existing.state in ("Creating", "Deleting", "Updating"):
                    return _error(409, "OperationNotAllowed", f"Operation on VM {existing.name} is in progress.")
                old = existing.properties.get("osProfile") or {}
                new = (body.get("properties") or {}).get("osProfile") or {}
                if old != new:
                    return _error(409, "PropertyChangeNotAllowed", "Changing property 'osProfile' is not allowed.")
                existing.body["tags"] = body.get("tags") or {}
                existing.state = "Updating"
                op = self._new_op("update", key, str(body["location"]))
                return 200, self._async_headers(op, base), existing.view()
            fault = next((f for f in self._faults if f.matches(body)), None)
            if fault is not None and fault.times is not None:
                fault.times -= 1
            if fault is not None and fault.mode == "sync":
                return _error(fault.status, fault.code, fault.message)
            vm = FakeVM(groups["sub"], groups["rg"], groups["name"], body)
            self._vms[key] = vm
            op = self._new_op("create", key, str(body["location"]))
            if fault is not None:
                op.error = {"code": fault.code, "message": fault.message}
            reply = (201, self._async_headers(op, base), vm.view())
            holding = self._hold.is_set()
            if holding:
                self.held += 1
        if holding:
            # The VM exists in ARM, but its creator has not heard back yet.
            self.wait_held()
            with self._lock:
                self.held -= 1
        return reply

    def _get(self, groups: Mapping[str, str], instance_view: bool) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            vm = self._vms.get(self._key(groups))
            if vm is None:
                return _not_found(groups["name"])
            return 200, {}, vm.view(instance_view)

    def _list(
        self, groups: Mapping[str, str], query: dict[str, list[str]], base: str, path: str
    ) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            items = [
                v.view()
                for k, v in sorted(self._vms.items())
                if k[0] == groups["sub"].lower() and k[1] == groups["rg"].lower()
            ]
        skip = int((query.get("$skiptoken") or ["0"])[0] or 0)
        page = items[skip : skip + self.page_size]
        out: dict[str, Any] = {"value": page}
        if skip + self.page_size < len(items):
            api = query["api-version"][0]
            out["nextLink"] = f"{base}{quote(path)}?api-version={api}&$skiptoken={skip + self.page_size}"
        return 200, {}, out

    def _skus(
        self, groups: Mapping[str, str], method: str, query: dict[str, list[str]], base: str, path: str
    ) -> tuple[int, dict[str, str], Any]:
        if method != "GET":
            return _error(405, "MethodNotAllowed", f"{method} is not supported on this resource")
        if groups["sub"].lower() != self.subscription.lower():
            return _error(404, "SubscriptionNotFound", f"The subscription '{groups['sub']}' could not be found.")
        text = (query.get("$filter") or [""])[0]
        if text:
            match = _FILTER_RE.match(text)
            if match is None:
                return _error(400, "InvalidFilter", "Only the location filter is supported: location eq '<location>'.")
            items = resource_skus(match["loc"])
        else:
            items = [sku for region in SKU_REGIONS for sku in resource_skus(region)]
        skip = int((query.get("$skiptoken") or ["0"])[0] or 0)
        out: dict[str, Any] = {"value": items[skip : skip + self.page_size]}
        if skip + self.page_size < len(items):
            params = f"api-version={query['api-version'][0]}"
            if text:
                params += f"&$filter={quote(text)}"
            out["nextLink"] = f"{base}{quote(path)}?{params}&$skiptoken={skip + self.page_size}"
        return 200, {}, out

    def _delete(self, groups: Mapping[str, str], base: str) -> tuple[int, dict[str, str], Any]:
        key = self._key(groups)
        with self._lock:
            vm = self._vms.get(key)
            if vm is None:
                return 204, {}, None
            op = next((o for o in self._ops.values() if o.key == key and o.kind == "delete"), None)
            if op is None:
                vm.state = "Deleting"
                op = self._new_op("delete", key, str(vm.body.get("location")))
            headers = self._async_headers(op, base)
            headers["Location"] = self._op_url(op, base, result=True)
            return 202, headers, None

    def _power(self, groups: Mapping[str, str], base: str) -> tuple[int, dict[str, str], Any]:
        key = self._key(groups)
        with self._lock:
            vm = self._vms.get(key)
            if vm is None:
                return _not_found(groups["name"])
            action = groups["action"].lower()
            vm.power = "deallocating" if action == "deallocate" else "starting"
            op = self._new_op(action, key, str(vm.body.get("location")))
            return 202, {"Location": self._op_url(op, base, result=True), "Retry-After": "0"}, None

    def _get_operation(
        self, op_id: str, result: bool, base: str, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            op = self._ops.get(op_id)
            if op is None:
                return _error(404, "NotFound", f"operation {op_id} not found")
            op.polls += 1
            self._settle()
            if result:
                if op.status == "InProgress":
                    return 202, {"Location": self._op_url(op, base, result=True), "Retry-After": "0"}, None
                if op.status == "Failed":
                    error = op.error or {}
                    return _error(500, error.get("code", "InternalError"), error.get("message", ""))
                return 204, {}, None
            doc: dict[str, Any] = {"name": op.op_id, "status": op.status, "startTime": _iso(time.time())}
            if op.status == "Failed":
                doc["error"] = op.error
            headers = {"Retry-After": "0"} if op.status == "InProgress" else {}
            return 200, headers, doc

    # -- operations ----------------------------------------------------------------------

    def _new_op(self, kind: str, key: tuple[str, str, str], location: str) -> _Op:
        op = _Op(uuid.uuid4().hex, kind, key, location)
        self._ops[op.op_id] = op
        return op

    def _op_url(self, op: _Op, base: str, result: bool = False) -> str:
        leaf = "operationResults" if result else "operations"
        return (
            f"{base}/subscriptions/{op.key[0]}/providers/Microsoft.Compute/locations/{op.location}/"
            f"{leaf}/{op.op_id}?api-version=2026-04-01"
        )

    def _async_headers(self, op: _Op, base: str) -> dict[str, str]:
        return {"Azure-AsyncOperation": self._op_url(op, base), "Retry-After": "0"}

    def _settle(self) -> None:
        """Finish every operation that is due (polled enough, or old enough)."""
        now = time.monotonic()
        for op in self._ops.values():
            if op.status == "InProgress" and (op.polls >= self.op_polls or now - op.started >= self.op_seconds):
                self._finish(op)

    def _finish(self, op: _Op) -> None:
        vm = self._vms.get(op.key)
        op.status = "Failed" if op.error else "Succeeded"
        if vm is None:
            return
        if op.kind in ("create", "update"):
            vm.state = "Failed" if op.error else "Succeeded"
            vm.power = "stopped" if op.error else "running"
        elif op.kind == "delete":
            del self._vms[op.key]
        elif op.kind == "deallocate":
            vm.power = "deallocated"
        elif op.kind == "start":
            vm.power = "running"


def _validate(body: Mapping[str, Any]) -> str:
    """'' when ``body`` is a VM ARM would accept (for the parts Styx sends), else why not."""
    props = body.get("properties") or {}
    if not body.get("location"):
        return "The 'location' property is required."
    if not (props.get("hardwareProfile") or {}).get("vmSize"):
        return "Required parameter 'hardwareProfile.vmSize' is missing."
    image = (props.get("storageProfile") or {}).get("imageReference") or {}
    if not image.get("id") and not all(image.get(k) for k in ("publisher", "offer", "sku", "version")):
        return "The 'storageProfile.imageReference' is incomplete."
    os_profile = props.get("osProfile") or {}
    if not os_profile.get("computerName") or not os_profile.get("adminUsername"):
        return "Required parameters 'osProfile.computerName' and 'osProfile.adminUsername' are missing."
    linux = os_profile.get("linuxConfiguration") or {}
    if not os_profile.get("adminPassword") and not (linux.get("ssh") or {}).get("publicKeys"):
        return "A Linux VM needs 'adminPassword' or 'linuxConfiguration.ssh.publicKeys'."
    if os_profile.get("customData"):
        try:
            base64.b64decode(os_profile["customData"], validate=True)
        except ValueError:
            return "The 'osProfile.customData' must be base64."
    network = props.get("networkProfile") or {}
    configs = network.get("networkInterfaceConfigurations") or []
    if not network.get("networkInterfaces") and not configs:
        return "Required parameter 'networkProfile' is missing (a VM needs a network interface)."
    if configs and not network.get("networkApiVersion"):
        return "'networkApiVersion' is required with 'networkInterfaceConfigurations'."
    for cfg in configs:
        for ip in (cfg.get("properties") or {}).get("ipConfigurations") or []:
            if not ((ip.get("properties") or {}).get("subnet") or {}).get("id"):
                return "Each ipConfiguration needs 'subnet.id'."
    if any(z not in ("1", "2", "3") for z in body.get("zones") or []):
        return "The 'zones' values must be '1', '2' or '3'."
    if props.get("priority") == "Spot" and not props.get("evictionPolicy"):
        return "Spot VMs need an 'evictionPolicy'."
    return ""


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], Any]:
    return status, {}, {"error": {"code": code, "message": message}}


def _not_found(name: str) -> tuple[int, dict[str, str], Any]:
    return _error(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group was not found.",
    )


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00", time.gmtime(stamp))


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing: parse, hand to the fake, write JSON."""

    fake: FakeAzureCompute
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        base = f"http://{self.headers.get('Host') or '127.0.0.1'}"
        from urllib.parse import unquote

        status, extra, doc = self.fake.handle(
            self.command, unquote(parts.path), parse_qs(parts.query), headers, body, base
        )
        payload = b"" if doc is None else json.dumps(doc).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("x-ms-request-id", uuid.uuid4().hex)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (killed mid-request): nothing to answer

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the fake's ``requests`` instead."""


class AgentBooter:
    """Plays what a VM's first boot would do: for each VM that reached ``Succeeded``, run
    ``python -m styx.agent`` with the environment its customData (the Styx startup script)
    carries, as cloud-init would; kill that agent when the VM is deleted or deallocated.

    ``capacity(vm_size)`` gives (cpus, memory GiB) to advertise, so the node matches the
    offer rather than this test machine. ``home`` holds the agents' work dirs and logs.
    """

    def __init__(
        self,
        fake: FakeAzureCompute,
        home: Path,
        capacity: Callable[[str], tuple[float, float]] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.fake = fake
        self.home = home
        self.capacity = capacity
        self.extra_env = dict(extra_env or {})
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        #: VM names booted so far (also those since deleted).
        self.booted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="agent-booter", daemon=True)

    def start(self) -> AgentBooter:
        """Start watching the fake."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop watching and kill every agent still running."""
        self._stop.set()
        self._thread.join(5)
        for name in list(self.agents):
            self._kill(name)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            live = {v.name: v for v in self.fake.vms(include_deleting=False)}
            for name, vm in live.items():
                if name not in self.agents and name not in self.booted and vm.state == "Succeeded":
                    self._boot(vm)
            for name in list(self.agents):
                vm = live.get(name)
                if vm is None or vm.power in ("deallocating", "deallocated"):
                    self._kill(name)

    def _boot(self, vm: FakeVM) -> None:
        settings = parse_startup_env(vm.custom_data)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STYX_")}
        env.update(settings)
        env.update(STYX_HOME=str(self.home), STYX_INSTANCE_ID=vm.id, **self.extra_env)
        size = (vm.properties.get("hardwareProfile") or {}).get("vmSize", "")
        if self.capacity is not None:
            cpus, memory = self.capacity(size)
            env.update(STYX_AGENT_CPUS=str(cpus), STYX_AGENT_MEMORY_GIB=str(memory))
        log_dir = self.home / "vm-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{vm.name}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "styx.agent"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.home),
                start_new_session=True,  # the "VM": killed as a whole when it vanishes
            )
        self.agents[vm.name] = proc
        self.booted.append(vm.name)

    def _kill(self, name: str) -> None:
        proc = self.agents.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a VM that vanishes gives no grace period
        proc.wait(10)
