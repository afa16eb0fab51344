"""A small local FAKE of the Compute Engine REST API, for testing the gcp provider plugin.

No runnable Compute Engine exists outside Google, so the plugin's tests drive the REAL
google-cloud-compute client (REST transport) against this fake, which speaks the
documented wire format (cloud.google.com/compute/docs/reference/rest/v1) for the calls the
plugin makes, and nothing else:

- ``POST   /compute/v1/projects/{p}/zones/{z}/instances?requestId=``       instances.insert
- ``GET    /compute/v1/projects/{p}/zones/{z}/instances/{name}``           instances.get
- ``GET    /compute/v1/projects/{p}/zones/{z}/instances?filter=``          instances.list
- ``GET    /compute/v1/projects/{p}/aggregated/instances?filter=``         instances.aggregatedList
- ``DELETE /compute/v1/projects/{p}/zones/{z}/instances/{name}``           instances.delete
- ``POST   /compute/v1/projects/{p}/zones/{z}/instances/{name}/stop|start`` instances.stop/start
- ``GET    /compute/v1/projects/{p}/zones/{z}/operations/{op}``            zoneOperations.get
- ``POST   /compute/v1/projects/{p}/zones/{z}/operations/{op}/wait``       zoneOperations.wait
- ``GET    /compute/v1/projects/{p}/aggregated/machineTypes?maxResults=&pageToken=``
  machineTypes.aggregatedList (``MACHINE_TYPES``: a handful of types in two zones of each of
  two regions; pages of at most ``page_size`` types, continued by ``nextPageToken``)
- ``GET    /compute/v1/projects/{p}/aggregated/acceleratorTypes?maxResults=&pageToken=``
  acceleratorTypes.aggregatedList (``ACCELERATOR_TYPES``, paged the same way)

Behaviour copied from the real API: mutations answer with a zone Operation (RUNNING, then
DONE after ``op_delay_s``); ``requestId`` makes a retried mutation return the first
Operation instead of acting twice; names are unique per zone (409 alreadyExists); label,
name, ``scheduling.provisioningModel`` and metadata rules are validated; asynchronous
failures (capacity, quota) come as a DONE Operation with ``error.errors[].code`` and the
``httpErrorStatusCode`` / ``httpErrorMessage`` fields; synchronous errors use the JSON
error body ``{"error": {"code", "message", "errors": [{"reason", ...}]}}``; list filters
support ``labels.KEY = "VALUE"`` / ``name`` / ``status`` terms joined by AND.

Test hooks: ``fail_zone`` (inject a capacity/quota error for inserts in a zone),
``forbid`` (answer 403 to everything), ``hold_inserts`` / ``release_inserts`` (accept an
insert, then hold its HTTP response, to kill a client between the call and its commit),
``vanish`` (delete a VM behind Styx's back). ``BootPlayer`` plays the VMs' boot: for
each RUNNING instance it starts the agent its startup script would start, locally.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from styx.provisioner.bootstrap import parse_startup_env

log = logging.getLogger(__name__)

PREFIX = "/compute/v1/projects/"
ZONES = (
    "us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f",
    "us-east1-b", "us-east1-c", "us-east1-d", "us-west1-a", "us-west1-b",
    "europe-west4-a", "europe-west4-b", "europe-west4-c", "asia-east1-a", "asia-east1-c",
)  # fmt: skip
# Machine types per zone, as machineTypes.aggregatedList describes them: (name, guestCpus,
# memoryMb, isSharedCpu, bundled GPU type or "", GPU count). e2-micro and n2d-standard-2 are
# real types that the built-in catalog does not price.
_GENERAL = (
    ("e2-micro", 2, 1024, True, "", 0),
    ("e2-standard-2", 2, 8192, False, "", 0),
    ("e2-standard-4", 4, 16384, False, "", 0),
    ("n2-standard-4", 4, 16384, False, "", 0),
    ("n2d-standard-2", 2, 8192, False, "", 0),
    ("n1-standard-4", 4, 15360, False, "", 0),
    ("n1-standard-8", 8, 30720, False, "", 0),
)
_A2 = ("a2-highgpu-1g", 12, 87040, False, "nvidia-tesla-a100", 1)
_G2 = ("g2-standard-4", 4, 16384, False, "nvidia-l4", 1)
MACHINE_TYPES: dict[str, tuple[tuple[str, int, int, bool, str, int], ...]] = {
    "us-central1-a": (*_GENERAL, _A2, _G2),
    "us-central1-b": (*_GENERAL, _A2),
    "europe-west4-a": (*_GENERAL, _A2),
    "europe-west4-b": (*_GENERAL, _G2),
}
# Accelerator types per zone: (name, description, maximumCardsPerInstance).
_T4 = ("nvidia-tesla-t4", "NVIDIA T4", 4)
ACCELERATOR_TYPES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "us-central1-a": (_T4, ("nvidia-tesla-v100", "NVIDIA V100", 8), ("nvidia-tesla-a100", "NVIDIA A100 40GB", 16),
                      ("nvidia-l4", "NVIDIA L4", 8)),
    "us-central1-b": (_T4, ("nvidia-tesla-a100", "NVIDIA A100 40GB", 16)),
    "europe-west4-a": (_T4, ("nvidia-tesla-a100", "NVIDIA A100 40GB", 16)),
    "europe-west4-b": (_T4, ("nvidia-l4", "NVIDIA L4", 8)),
}  # fmt: skip
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_MACHINE_TYPE = re.compile(r"(?:^|/)zones/([a-z0-9-]+)/machineTypes/([a-z0-9-]+)$")
_TERM = re.compile(r'^\(?\s*([a-zA-Z][\w.-]*)\s*(=|!=|eq|ne)\s*"?([^"()]*)"?\s*\)?$')
CAPACITY_MESSAGE = (
    "The zone 'projects/{project}/zones/{zone}' does not have enough resources available to fulfill "
    "the request. Try a different zone, or try again later."
)


class ApiError(Exception):
    """A synchronous error answer (status + reason + message)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class FakeCompute:
    """In-memory Compute Engine for one or more projects, served over HTTP on 127.0.0.1:0."""

    def __init__(self, op_delay_s: float = 0.05, page_size: int = 500) -> None:
        self.op_delay_s = op_delay_s
        self.page_size = page_size  # most entries of an aggregated list page (the API's default maxResults)
        self.catalog_calls = 0  # machineTypes / acceleratorTypes aggregatedList pages served
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.instances: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.operations: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._by_request: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._effects: dict[str, tuple[float, Any]] = {}
        self.zone_faults: dict[str, tuple[str, int, str]] = {}
        self.forbidden = False
        self.inserts = 0  # insert calls that reached the fake (requestId repeats included)
        self.insert_request_ids: list[str] = []
        self._hold: threading.Event | None = None
        self._ids = itertools.count(4_000_000_000_000_000_001)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-gce", daemon=True)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> FakeCompute:
        """Serve in a background thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (held inserts are released first)."""
        self.release_inserts()
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: what STYX_GCP_COMPUTE_ENDPOINT is set to."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test hooks ------------------------------------------------------------------------

    def fail_zone(self, zone: str, code: str = "ZONE_RESOURCE_POOL_EXHAUSTED", status: int = 503) -> None:
        """Make every insert in ``zone`` fail asynchronously with ``code`` (its Operation)."""
        message = CAPACITY_MESSAGE if code.startswith("ZONE_RESOURCE") else f"{code} in zone {{zone}}"
        self.zone_faults[zone] = (code, status, message)

    def forbid(self, on: bool = True) -> None:
        """Answer every request with 403 forbidden (a caller without permissions)."""
        self.forbidden = on

    def hold_inserts(self) -> None:
        """From now on, accept inserts (the VM is created) but hold their HTTP answers."""
        self._hold = threading.Event()

    def release_inserts(self) -> None:
        """Let held insert answers go (to whoever is still listening)."""
        if self._hold is not None:
            self._hold.set()
            self._hold = None

    def vanish(self, zone: str, name: str, project: str = "") -> None:
        """Delete a VM behind the client's back (like a user in the console, or preemption)."""
        with self.lock:
            for key in [k for k in self.instances if k[1:] == (zone, name) and (not project or k[0] == project)]:
                del self.instances[key]

    def live(self) -> dict[str, dict[str, Any]]:
        """Ground truth: ``<zone>/<name>`` -> instance JSON of every existing VM."""
        self.settle()
        with self.lock:
            return {f"{z}/{n}": dict(inst) for (_, z, n), inst in sorted(self.instances.items())}

    def settle(self) -> None:
        """Apply the effects of operations whose time has come (as the cloud would)."""
        with self.lock:
            for key in list(self.operations):
                self._advance(key)

    # -- operations ------------------------------------------------------------------------

    def _new_operation(self, project: str, zone: str, kind: str, target: str, effect: Any) -> dict[str, Any]:
        name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}"
        op = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "zone": self._zone_url(project, zone),
            "operationType": kind,
            "targetLink": f"{self._zone_url(project, zone)}/instances/{target}",
            "status": "RUNNING",
            "progress": 0,
            "insertTime": _now_rfc3339(),
            "startTime": _now_rfc3339(),
            "selfLink": f"{self._zone_url(project, zone)}/operations/{name}",
        }
        self.operations[(project, zone, name)] = op
        self._effects[name] = (time.monotonic() + self.op_delay_s, effect)
        return op

    def _advance(self, key: tuple[str, str, str]) -> dict[str, Any]:
        op = self.operations[key]
        pending = self._effects.get(op["name"])
        if pending is not None and time.monotonic() >= pending[0]:
            del self._effects[op["name"]]
            error = pending[1]()
            op.update(status="DONE", progress=100, endTime=_now_rfc3339())
            if error:
                code, status, message = error
                op["error"] = {"errors": [{"code": code, "message": message}]}
                op["httpErrorStatusCode"] = status
                op["httpErrorMessage"] = {503: "SERVICE UNAVAILABLE", 403: "FORBIDDEN"}.get(status, "BAD REQUEST")
            self.changed.notify_all()
        return op

    def _zone_url(self, project: str, zone: str) -> str:
        return f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}"

    # -- API -------------------------------------------------------------------------------

    def insert(self, project: str, zone: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        """instances.insert."""
        with self.lock:
            self.inserts += 1
            self.insert_request_ids.append(request_id)
            if request_id and (project, request_id) in self._by_request:
                return dict(self._advance(self._by_request[(project, request_id)]))
            inst = self._validated(project, zone, body)
            key = (project, zone, inst["name"])
            if key in self.instances:
                raise ApiError(
                    409, "alreadyExists", f"The resource 'projects/{project}/zones/{zone}/instances/{inst['name']}' "
                    "already exists"
                )
            fault = self.zone_faults.get(zone)
            if fault is None:
                self.instances[key] = inst

            def effect() -> tuple[str, int, str] | None:
                if fault is not None:
                    code, status, message = fault
                    return code, status, message.format(project=project, zone=zone)
                if key in self.instances and self.instances[key]["status"] in ("PROVISIONING", "STAGING"):
                    self.instances[key]["status"] = "RUNNING"
                return None

            op = self._new_operation(project, zone, "insert", inst["name"], effect)
            if request_id:
                self._by_request[(project, request_id)] = (project, zone, op["name"])
            return dict(op)

    def _validated(self, project: str, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body.get("name", ""))
        if not _NAME.match(name):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.name': '{name}'. Must be a match of "
                           "regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        match = _MACHINE_TYPE.search(str(body.get("machineType", "")))
        if match is None or match.group(1) != zone:
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.machineType': "
                           f"'{body.get('machineType', '')}'.")
        if match.group(2).startswith("bogus"):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.machineType': Machine type with name "
                           f"'{match.group(2)}' does not exist in zone '{zone}'.")
        labels = body.get("labels") or {}
        if len(labels) > 64:
            raise ApiError(400, "invalid", "Invalid value for field 'resource.labels': at most 64 labels")
        for key, value in labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(str(value)):
                raise ApiError(400, "invalid", f"Invalid value for field 'resource.labels': label '{key}={value}'")
        disks = body.get("disks") or []
        if not any(d.get("boot") for d in disks):
            raise ApiError(400, "invalid", "Invalid value for field 'resource.disks': a boot disk is required")
        if not body.get("networkInterfaces"):
            raise ApiError(400, "invalid", "Invalid value for field 'resource.networkInterfaces': required")
        scheduling = body.get("scheduling") or {}
        model = scheduling.get("provisioningModel", "STANDARD")
        if model not in ("STANDARD", "SPOT"):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.scheduling.provisioningModel': "
                           f"'{model}'")
        if model == "SPOT" and scheduling.get("automaticRestart", True):
            raise ApiError(400, "invalid", "Invalid value for field 'resource.scheduling.automaticRestart': "
                           "Spot VMs cannot have automatic restart enabled.")
        items = (body.get("metadata") or {}).get("items") or []
        for item in items:
            if not re.match(r"^[a-zA-Z0-9_-]{1,128}$", str(item.get("key", ""))):
                raise ApiError(400, "invalid", f"Invalid value for field 'resource.metadata': key {item.get('key')!r}")
        inst = json.loads(json.dumps(body))
        url = self._zone_url(project, zone)
        inst.update(
            kind="compute#instance",
            id=str(next(self._ids)),
            status="PROVISIONING",
            zone=url,
            machineType=f"{url}/machineTypes/{match.group(2)}",
            selfLink=f"{url}/instances/{name}",
            creationTimestamp=_now_rfc3339(),
            labelFingerprint=uuid.uuid4().hex[:12],
        )
        inst.setdefault("scheduling", {}).setdefault("provisioningModel", "STANDARD")
        inst.setdefault("metadata", {})["fingerprint"] = uuid.uuid4().hex[:12]
        return inst

    def get(self, project: str, zone: str, name: str) -> dict[str, Any]:
        """instances.get."""
        with self.lock:
            self.settle()
            inst = self.instances.get((project, zone, name))
            if inst is None:
                raise ApiError(404, "notFound", f"The resource 'projects/{project}/zones/{zone}/instances/{name}' "
                               "was not found")
            return dict(inst)

    def list(self, project: str, zone: str, flt: str) -> dict[str, Any]:
        """instances.list (one page)."""
        terms = _parse_filter(flt)
        with self.lock:
            self.settle()
            items = [i for (p, z, _), i in sorted(self.instances.items()) if p == project and z == zone]
        found = [i for i in items if _matches(i, terms)]
        out: dict[str, Any] = {"kind": "compute#instanceList", "id": f"projects/{project}/zones/{zone}/instances"}
        if found:
            out["items"] = found
        return out

    def aggregated(self, project: str, flt: str) -> dict[str, Any]:
        """instances.aggregatedList: every zone, empty zones as warnings like the real API."""
        terms = _parse_filter(flt)
        with self.lock:
            self.settle()
            items = [(z, i) for (p, z, _), i in sorted(self.instances.items()) if p == project]
        scopes: dict[str, Any] = {}
        for zone in ZONES:
            found = [i for z, i in items if z == zone and _matches(i, terms)]
            if found:
                scopes[f"zones/{zone}"] = {"instances": found}
            else:
                scopes[f"zones/{zone}"] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": "There are no results for scope 'zones/{zone}' on this page.",
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }
                }
        return {"kind": "compute#instanceAggregatedList", "id": f"projects/{project}/aggregated/instances",
                "items": scopes}

    def machine_types(self, project: str, max_results: int, page_token: str) -> dict[str, Any]:
        """machineTypes.aggregatedList (one page)."""
        rows = [(zone, self._machine_type(project, zone, *spec)) for zone, specs in MACHINE_TYPES.items()
                for spec in specs]  # fmt: skip
        return self._aggregated_page(project, "machineTypes", rows, max_results, page_token)

    def accelerator_types(self, project: str, max_results: int, page_token: str) -> dict[str, Any]:
        """acceleratorTypes.aggregatedList (one page)."""
        rows = []
        for zone, specs in ACCELERATOR_TYPES.items():
            for n, (name, description, cards) in enumerate(specs):
                url = self._zone_url(project, zone)
                rows.append((zone, {
                    "kind": "compute#acceleratorType", "id": str(10000 + n), "name": name,
                    "creationTimestamp": "1969-12-31T16:00:00.000-08:00", "description": description,
                    "zone": url, "selfLink": f"{url}/acceleratorTypes/{name}", "maximumCardsPerInstance": cards,
                }))  # fmt: skip
        return self._aggregated_page(project, "acceleratorTypes", rows, max_results, page_token)

    def _machine_type(
        self, project: str, zone: str, name: str, cpus: int, memory_mb: int, shared: bool, gpu: str, gpus: int
    ) -> dict[str, Any]:
        url = self._zone_url(project, zone)
        out: dict[str, Any] = {
            "kind": "compute#machineType", "id": str(abs(hash(name)) % 10**10), "name": name,
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "description": f"{cpus} vCPUs, {memory_mb / 1024:g} GB RAM", "guestCpus": cpus, "memoryMb": memory_mb,
            "imageSpaceGb": 0, "maximumPersistentDisks": 128, "maximumPersistentDisksSizeGb": "263168",
            "zone": zone, "selfLink": f"{url}/machineTypes/{name}", "isSharedCpu": shared, "architecture": "X86_64",
        }  # fmt: skip
        if gpu:
            out["accelerators"] = [{"guestAcceleratorType": gpu, "guestAcceleratorCount": gpus}]
        return out

    def _aggregated_page(
        self, project: str, what: str, rows: list[tuple[str, dict[str, Any]]], max_results: int, page_token: str
    ) -> dict[str, Any]:
        """A page of an aggregated list: ``items`` keyed ``zones/<zone>``; zones without
        entries appear (on the first page) with the API's NO_RESULTS_ON_PAGE warning."""
        with self.lock:
            self.catalog_calls += 1
        try:
            start = int(page_token or 0)
        except ValueError as exc:
            raise ApiError(400, "invalid", f"Invalid value for field 'pageToken': '{page_token}'") from exc
        size = min(max_results or 500, self.page_size)
        items: dict[str, Any] = {}
        if start == 0:
            for zone in ZONES:
                if not any(z == zone for z, _ in rows):
                    items[f"zones/{zone}"] = {"warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope 'zones/{zone}' on this page.",
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }}  # fmt: skip
        for zone, row in rows[start : start + size]:
            items.setdefault(f"zones/{zone}", {}).setdefault(what, []).append(row)
        kind = f"compute#{what[:-1]}AggregatedList"  # machineTypes -> compute#machineTypeAggregatedList
        out: dict[str, Any] = {
            "kind": kind, "id": f"projects/{project}/aggregated/{what}", "items": items,
            "selfLink": f"https://www.googleapis.com/compute/v1/projects/{project}/aggregated/{what}",
        }  # fmt: skip
        if start + size < len(rows):
            out["nextPageToken"] = str(start + size)
        return out

    def mutate(self, project: str, zone: str, name: str, verb: str, request_id: str) -> dict[str, Any]:
        """instances.delete / stop / start."""
        with self.lock:
            if request_id and (project, request_id) in self._by_request:
                return dict(self._advance(self._by_request[(project, request_id)]))
            self.get(project, zone, name)
            key = (project, zone, name)
            self.instances[key]["status"] = {"delete": "STOPPING", "stop": "STOPPING", "start": "STAGING"}[verb]

            def effect() -> None:
                if key not in self.instances:
                    return None
                if verb == "delete":
                    del self.instances[key]
                else:
                    self.instances[key]["status"] = "TERMINATED" if verb == "stop" else "RUNNING"
                return None

            op = self._new_operation(project, zone, verb, name, effect)
            if request_id:
                self._by_request[(project, request_id)] = (project, zone, op["name"])
            return dict(op)

    def operation(self, project: str, zone: str, name: str, wait_s: float = 0.0) -> dict[str, Any]:
        """zoneOperations.get (wait_s=0) and zoneOperations.wait (blocks until DONE or wait_s)."""
        deadline = time.monotonic() + wait_s
        with self.lock:
            key = (project, zone, name)
            if key not in self.operations:
                raise ApiError(404, "notFound", f"The resource 'projects/{project}/zones/{zone}/operations/{name}' "
                               "was not found")
            while True:
                op = self._advance(key)
                left = deadline - time.monotonic()
                if op["status"] == "DONE" or left <= 0:
                    return dict(op)
                self.changed.wait(min(left, 0.02))

    def held(self) -> threading.Event | None:
        """The event a held insert answer waits on (None when not holding)."""
        return self._hold


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())


def _parse_filter(text: str) -> list[tuple[str, bool, str]]:
    """``labels.a = "x" AND (status != RUNNING)`` -> [(field, equal, value)]."""
    if not text.strip():
        return []
    terms = []
    for part in re.split(r"\s+AND\s+|\)\s*\(", text.strip()):
        match = _TERM.match(part.strip())
        if match is None:
            raise ApiError(400, "invalid", f"Invalid value for field 'filter': '{text}'. "
                           "Invalid list filter expression.")
        field, op, value = match.groups()
        terms.append((field, op in ("=", "eq"), value))
    return terms


def _matches(inst: Mapping[str, Any], terms: list[tuple[str, bool, str]]) -> bool:
    for field, equal, value in terms:
        if field.startswith("labels."):
            actual = (inst.get("labels") or {}).get(field.removeprefix("labels."))
        else:
            actual = inst.get(field)
        if (str(actual) == value if actual is not None else False) != equal:
            return False
    return True


def _handler_for(fake: FakeCompute) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("fake gce: " + format, *args)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                if fake.forbidden:
                    raise ApiError(403, "forbidden", "Required 'compute.instances.list' permission for 'projects/x'")
                body = json.loads(raw) if raw else {}
                status, answer, hold = self._route(method, url.path, query, body)
            except ApiError as exc:
                status, hold = exc.status, None
                answer = {"error": {"code": exc.status, "message": exc.message,
                                    "errors": [{"message": exc.message, "domain": "global", "reason": exc.reason}]}}
            except (ValueError, KeyError) as exc:
                status, hold = 400, None
                answer = {"error": {"code": 400, "message": f"bad request: {exc}",
                                    "errors": [{"message": str(exc), "domain": "global", "reason": "badRequest"}]}}
            if hold is not None:
                hold.wait(120)  # the VM exists now; the caller just never hears about it (yet)
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client went away (killed while we held its answer)

        def _route(
            self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
        ) -> tuple[int, dict[str, Any], threading.Event | None]:
            if not path.startswith(PREFIX):
                raise ApiError(404, "notFound", f"no such path {path}")
            parts = path[len(PREFIX):].split("/")
            project, rest = parts[0], parts[1:]
            request_id = query.get("requestId", "")
            flt = query.get("filter", "")
            if rest == ["aggregated", "instances"] and method == "GET":
                return 200, fake.aggregated(project, flt), None
            if rest in (["aggregated", "machineTypes"], ["aggregated", "acceleratorTypes"]) and method == "GET":
                lister = fake.machine_types if rest[1] == "machineTypes" else fake.accelerator_types
                return 200, lister(project, int(query.get("maxResults") or 0), query.get("pageToken", "")), None
            if len(rest) < 3 or rest[0] != "zones":
                raise ApiError(404, "notFound", f"no such path {path}")
            zone = rest[1]
            if zone not in ZONES:
                raise ApiError(404, "notFound", f"The resource 'projects/{project}/zones/{zone}' was not found")
            tail = rest[2:]
            if tail == ["instances"] and method == "POST":
                hold = fake.held()
                return 200, fake.insert(project, zone, body, request_id), hold
            if tail == ["instances"] and method == "GET":
                return 200, fake.list(project, zone, flt), None
            if len(tail) == 2 and tail[0] == "instances" and method == "GET":
                return 200, fake.get(project, zone, tail[1]), None
            if len(tail) == 2 and tail[0] == "instances" and method == "DELETE":
                return 200, fake.mutate(project, zone, tail[1], "delete", request_id), None
            if len(tail) == 3 and tail[0] == "instances" and tail[2] in ("stop", "start") and method == "POST":
                return 200, fake.mutate(project, zone, tail[1], tail[2], request_id), None
            if len(tail) == 2 and tail[0] == "operations" and method == "GET":
                return 200, fake.operation(project, zone, tail[1]), None
            if len(tail) == 3 and tail[0] == "operations" and tail[2] == "wait" and method == "POST":
                return 200, fake.operation(project, zone, tail[1], wait_s=2.0), None
            raise ApiError(404, "notFound", f"no such path {path}")

    return Handler


class BootPlayer:
    """Plays the VMs' boot: for each RUNNING VM of the fake, starts the agent its startup
    script would start (``python -m styx.agent`` with the script's settings, locally), and
    kills that agent when the VM disappears. Stands in for cloud-init, nothing more.
    """

    def __init__(self, fake: FakeCompute, workdir: Path, cpus: float, memory_gib: float, env: Mapping[str, str]):
        self.fake = fake
        self.workdir = workdir
        self.cpus, self.memory_gib = cpus, memory_gib
        self.env = dict(env)
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.booted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="boot-player", daemon=True)

    def start(self) -> BootPlayer:
        """Start watching the fake."""
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            live = self.fake.live()
            for iid, inst in live.items():
                if iid not in self.agents and inst.get("status") == "RUNNING":
                    self._boot(iid, inst)
            for iid in [i for i in self.agents if i not in live]:
                self._kill(iid)

    def _boot(self, iid: str, inst: Mapping[str, Any]) -> None:
        items = {i["key"]: i["value"] for i in (inst.get("metadata") or {}).get("items", [])}
        settings = parse_startup_env(items["startup-script"])
        env = {**self.env, **settings}
        node = settings["STYX_NODE_ID"]
        env.update(STYX_AGENT_CPUS=str(self.cpus), STYX_AGENT_MEMORY_GIB=str(self.memory_gib),
                   STYX_AGENT_WORK_DIR=str(self.workdir / node), STYX_HOME=str(self.workdir / "home"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"agent-{node}.log", "ab") as out:
            self.agents[iid] = subprocess.Popen(
                [sys.executable, "-m", "styx.agent"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.booted.append(iid)

    def _kill(self, iid: str) -> None:
        proc = self.agents.pop(iid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the VM is gone: its agent dies with it
        proc.wait(10)

    def stop(self) -> None:
        """Stop watching and kill every agent started."""
        self._stop.set()
        self._thread.join(5)
        for iid in list(self.agents):
            self._kill(iid)
