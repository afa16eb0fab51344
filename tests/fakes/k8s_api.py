"""A FAKE Kubernetes API server that also plays the scheduler and the kubelet, for tests.

No kube-apiserver can be installed on the test machines, so the official ``kubernetes``
Python client (what the Styx provider uses) talks plain HTTP to this server instead. It
speaks the documented REST wire format of the core/v1 API, for the parts Styx uses:

- discovery: ``/version``, ``/api``, ``/apis``, ``/api/v1``;
- ``namespaces`` (get, list), ``nodes`` (get, list), ``events`` (list, ``fieldSelector``
  ``involvedObject.name=``), ``secrets`` and ``pods`` (create, get, list, delete,
  deletecollection; secrets also replace (PUT); pods also ``watch`` and ``log``), in a namespace or across all;
- objects as the API returns them (``metadata.uid / resourceVersion /
  creationTimestamp``, ``kind`` / ``apiVersion``), one global resourceVersion counter,
  ``labelSelector`` (equality terms only), ``watch=true`` streaming one JSON event per line
  (``ADDED`` of the current objects first when no resourceVersion is given);
- errors as ``Status`` bodies: 404 NotFound, 409 AlreadyExists, 422 Invalid, and 401
  Unauthorized when ``token`` is set and a request lacks ``Authorization: Bearer <token>``;
- HTTPS when ``tls`` names a certificate chain and key, as a pod's service account sees
  the API server at ``KUBERNETES_SERVICE_HOST``.

The scheduler: a created pod is bound to the first node (in the order given) whose
allocatable cpu / memory / ``nvidia.com/gpu`` / ``amd.com/gpu`` minus the requests of the
pods already bound there covers the pod's requests, whose labels match its
``nodeSelector`` and whose ``NoSchedule`` taints it tolerates. A pod that fits no node gets
condition ``PodScheduled=False`` reason ``Unschedulable`` and a ``FailedScheduling`` event
with the scheduler's usual "0/N nodes are available: ..." message (scheduling is tried once).

The kubelet: a bound pod gets ``status.podIP`` = a distinct loopback address
(127.0.0.11, .12, ...: every 127/8 address is this machine, so pods reach each other as on
a flat pod network) and its first container's ``command`` + ``args`` run as a local
process with the container's env resolved (``value``, ``secretKeyRef``, ``fieldRef`` of
``status.podIP`` / ``metadata.name`` / ``metadata.namespace`` / ``spec.nodeName``) over
``base_env``. For a pod with ``nvidia.com/gpu`` limits it plays the device plugin: a
stand-in ``nvidia-smi`` listing that many GPUs of the node's product label comes first on
PATH. Phase goes Pending -> Running -> Succeeded/Failed; output is served at
``pods/NAME/log``. An image in ``unpullable`` never starts: the container waits with
reason ``ErrImagePull`` then ``ImagePullBackOff``. Deleting a pod kills its process group.
Images are otherwise ignored (the process runs on this machine).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

GPU_KEYS = ("nvidia.com/gpu", "amd.com/gpu")
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "m": 1e-3}


def quantity(text: str) -> float:
    """A Kubernetes quantity ("500m", "64Gi", "8") as a number (bytes or cores)."""
    text = str(text)
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _UNITS[suffix]
    return float(text)


def _copy(obj: Any) -> dict[str, Any]:
    """A deep copy of a wire object (what a client gets is never the stored object)."""
    return cast(dict[str, Any], json.loads(json.dumps(obj)))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class FakeNode:
    """A node of the fake cluster: capacity, labels and taints."""

    name: str
    cpus: float = 8
    memory_gib: float = 32
    gpus: int = 0
    gpu_product: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The Node object."""
        alloc = {"cpu": f"{self.cpus:g}", "memory": f"{int(self.memory_gib * 1024)}Mi", "pods": "110"}
        labels = {"kubernetes.io/hostname": self.name, **self.labels}
        if self.gpus:
            alloc["nvidia.com/gpu"] = str(self.gpus)
            if self.gpu_product:
                labels.setdefault("nvidia.com/gpu.product", self.gpu_product)
        return {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": self.name,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.name)),
                "resourceVersion": "1",
                "creationTimestamp": _now(),
                "labels": labels,
            },
            "spec": {"taints": self.taints} if self.taints else {},
            "status": {
                "capacity": dict(alloc),
                "allocatable": alloc,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.name},
                ],
            },
        }


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key.rstrip("=!")) != value.lstrip("="):
            return False
    return True


def _requests(pod: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in pod["spec"].get("containers", []):
        res = c.get("resources") or {}
        wanted = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for key, value in wanted.items():
            out[key] = out.get(key, 0.0) + quantity(value)
    return out


class FakeKubernetes:
    """The fake API server + scheduler + kubelet. ``start()`` it, write ``kubeconfig()``."""

    def __init__(
        self,
        nodes: list[FakeNode],
        work_dir: Path,
        base_env: Mapping[str, str] | None = None,
        namespaces: tuple[str, ...] = ("default",),
        tls: tuple[Path, Path] | None = None,
        token: str = "",
    ) -> None:
        self.nodes = list(nodes)
        #: (certificate chain, key) PEM files: serve HTTPS, as a real API server does.
        self.tls = tls
        #: When set, every request must carry ``Authorization: Bearer <token>`` (else 401).
        self.token = token
        self.work_dir = work_dir
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.namespaces = set(namespaces)
        self.unpullable: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path) seen, for assertions
        self._cond = threading.Condition()
        self._rv = 100
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, ns, name)
        self._log: list[tuple[int, str, dict[str, Any]]] = []  # (rv, type, pod) of pods
        self._procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._next_ip = 11
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # ---- lifecycle -----------------------------------------------------------------
    def start(self) -> FakeKubernetes:
        """Serve on an ephemeral loopback port in a daemon thread."""
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        """Stop serving and kill every pod process."""
        with self._cond:
            procs = list(self._procs.values())
            self._procs.clear()
        for proc in procs:
            _kill(proc)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path, contexts: Mapping[str, str] | None = None, current: str = "") -> Path:
        """Write a kubeconfig with one context per entry (context -> namespace), all here."""
        contexts = dict(contexts or {"fake": "default"})
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token-not-a-secret"}}],
            "contexts": [
                {"name": c, "context": {"cluster": "fake", "user": "fake", "namespace": ns}}
                for c, ns in contexts.items()
            ],
            "current-context": current or next(iter(contexts)),
        }
        path.write_text(json.dumps(doc))
        return path

    # ---- ground truth for tests --------------------------------------------------------
    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        """Every pod (copies), optionally filtered by an equality label selector."""
        with self._cond:
            return [
                _copy(o)
                for (k, _, _), o in sorted(self._objects.items())
                if k == "Pod" and _matches(o["metadata"].get("labels") or {}, selector)
            ]

    def secrets(self, selector: str = "") -> list[dict[str, Any]]:
        """Every secret (copies), optionally filtered by a label selector."""
        with self._cond:
            return [
                _copy(o)
                for (k, _, _), o in sorted(self._objects.items())
                if k == "Secret" and _matches(o["metadata"].get("labels") or {}, selector)
            ]

    def pod_log(self, ns: str, name: str) -> str:
        """What the pod's process printed so far."""
        path = self.work_dir / "pods" / ns / name / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- store -------------------------------------------------------------------------
    def _stamp(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if obj["kind"] == "Pod":
            self._log.append((self._rv, "MODIFIED", _copy(obj)))
            self._cond.notify_all()

    def create(self, kind: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a namespaced object."""
        meta = body.setdefault("metadata", {})
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        plural = kind.lower() + "s"
        if not name or len(name) > 253 or name != name.lower():
            raise _ApiError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name: Invalid value')
        if ns not in self.namespaces:
            raise _ApiError(404, "NotFound", f'namespaces "{ns}" not found')
        if kind == "Pod" and not (body.get("spec") or {}).get("containers"):
            raise _ApiError(422, "Invalid", f'Pod "{name}" is invalid: spec.containers: Required value')
        with self._cond:
            if (kind, ns, name) in self._objects:
                raise _ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
            meta.update(name=name, namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
            body["kind"], body["apiVersion"] = kind, "v1"
            if kind == "Pod":
                body["status"] = {"phase": "Pending", "conditions": []}
            if kind == "Secret":
                for key, value in (body.pop("stringData", None) or {}).items():
                    body.setdefault("data", {})[key] = base64.b64encode(value.encode()).decode()
            self._objects[(kind, ns, name)] = body
            self._stamp(body)
            if kind == "Pod":
                self._log[-1] = (self._log[-1][0], "ADDED", self._log[-1][2])
                self._schedule(ns, name)
            return _copy(body)

    def replace(self, kind: str, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT an existing object (secrets: the provider rewrites a leftover one)."""
        with self._cond:
            old = self._objects.get((kind, ns, name))
            if old is None:
                raise _ApiError(404, "NotFound", f'{kind.lower()}s "{name}" not found')
            body.setdefault("metadata", {}).update(
                name=name,
                namespace=ns,
                uid=old["metadata"]["uid"],
                creationTimestamp=old["metadata"]["creationTimestamp"],
            )
            body["kind"], body["apiVersion"] = kind, "v1"
            for key, value in (body.pop("stringData", None) or {}).items():
                body.setdefault("data", {})[key] = base64.b64encode(value.encode()).decode()
            self._objects[(kind, ns, name)] = body
            self._stamp(body)
            return _copy(body)

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        """GET one object, 404 when absent."""
        with self._cond:
            if kind == "Namespace":
                if name not in self.namespaces:
                    raise _ApiError(404, "NotFound", f'namespaces "{name}" not found')
                return {
                    "kind": "Namespace",
                    "apiVersion": "v1",
                    "metadata": {"name": name, "resourceVersion": "1"},
                    "status": {"phase": "Active"},
                }
            if kind == "Node":
                for node in self.nodes:
                    if node.name == name:
                        return node.body()
                raise _ApiError(404, "NotFound", f'nodes "{name}" not found')
            obj = self._objects.get((kind, ns, name))
            if obj is None:
                raise _ApiError(404, "NotFound", f'{kind.lower()}s "{name}" not found')
            return _copy(obj)

    def list_objects(self, kind: str, ns: str | None, selector: str = "", field_selector: str = "") -> dict[str, Any]:
        """A ``<Kind>List`` of the namespace (None: every namespace)."""
        with self._cond:
            if kind == "Node":
                items = [n.body() for n in self.nodes]
            elif kind == "Namespace":
                items = [self.get("Namespace", "", n) for n in sorted(self.namespaces)]
            else:
                items = [
                    _copy(o) for (k, n, _), o in sorted(self._objects.items()) if k == kind and (ns is None or n == ns)
                ]
            items = [o for o in items if _matches(o["metadata"].get("labels") or {}, selector)]
            for term in filter(None, field_selector.split(",")):
                path, _, want = term.partition("=")
                items = [o for o in items if _field(o, path) == want]
            return {
                "kind": f"{kind}List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    def delete(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        """DELETE one object (a pod's process is killed), 404 when absent."""
        with self._cond:
            obj = self._objects.pop((kind, ns, name), None)
            if obj is None:
                raise _ApiError(404, "NotFound", f'{kind.lower()}s "{name}" not found')
            proc = self._procs.pop((ns, name), None) if kind == "Pod" else None
            if kind == "Pod":
                self._rv += 1
                obj["metadata"]["resourceVersion"] = str(self._rv)
                self._log.append((self._rv, "DELETED", _copy(obj)))
                self._cond.notify_all()
        if proc is not None:
            _kill(proc)
        return obj

    def watch(self, ns: str | None, rv: str, selector: str, timeout_s: float) -> Iterator[dict[str, Any]]:
        """Pod events after resourceVersion ``rv`` ("" / "0": the current pods as ADDED first)."""
        deadline = time.monotonic() + timeout_s
        if rv in ("", "0"):
            listed = self.list_objects("Pod", ns, selector)
            for pod in listed["items"]:
                yield {"type": "ADDED", "object": pod}
            since = int(listed["metadata"]["resourceVersion"])
        else:
            since = int(rv)
        while time.monotonic() < deadline:
            with self._cond:
                fresh = [e for e in self._log if e[0] > since]
                if not fresh:
                    self._cond.wait(min(1.0, max(deadline - time.monotonic(), 0.01)))
                    continue
            for stamp, typ, pod in fresh:
                since = stamp
                meta = pod["metadata"]
                if (ns is None or meta["namespace"] == ns) and _matches(meta.get("labels") or {}, selector):
                    yield {"type": typ, "object": pod}

    # ---- scheduler and kubelet ---------------------------------------------------------
    def _schedule(self, ns: str, name: str) -> None:
        pod = self._objects[("Pod", ns, name)]
        want = _requests(pod)
        selector = pod["spec"].get("nodeSelector") or {}
        tolerations = pod["spec"].get("tolerations") or []
        reasons: dict[str, int] = {}
        for node in self.nodes:
            why = self._misfit(node, want, selector, tolerations)
            if not why:
                self._bind(pod, node)
                return
            reasons[why] = reasons.get(why, 0) + 1
        detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        message = f"0/{len(self.nodes)} nodes are available: {detail}."
        pod["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": _now(),
            }
        ]
        self._stamp(pod)
        event: dict[str, Any] = {
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:12]}"},
            "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": pod["metadata"]["uid"]},
            "reason": "FailedScheduling",
            "message": message,
            "type": "Warning",
            "count": 1,
            "source": {"component": "default-scheduler"},
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
        }
        meta = event["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
        event["kind"], event["apiVersion"] = "Event", "v1"
        self._objects[("Event", ns, meta["name"])] = event
        self._stamp(event)

    def _misfit(
        self, node: FakeNode, want: Mapping[str, float], selector: Mapping[str, str], tolerations: list[dict[str, Any]]
    ) -> str:
        labels = node.body()["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            return "node(s) didn't match Pod's node affinity/selector"
        for taint in node.taints:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
                _tolerates(t, taint) for t in tolerations
            ):
                return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
        used: dict[str, float] = {}
        for (kind, _, _), other in self._objects.items():
            if (
                kind == "Pod"
                and other["spec"].get("nodeName") == node.name
                and other["status"].get("phase") in ("Pending", "Running")
            ):
                for key, value in _requests(other).items():
                    used[key] = used.get(key, 0.0) + value
        alloc = node.body()["status"]["allocatable"]
        for key, value in want.items():
            have = quantity(alloc.get(key, "0")) - used.get(key, 0.0)
            if value > have + 1e-9:
                return f"Insufficient {key}"
        return ""

    def _bind(self, pod: dict[str, Any], node: FakeNode) -> None:
        pod["spec"]["nodeName"] = node.name
        ip = f"127.0.0.{self._next_ip}"
        self._next_ip += 1
        pod["status"].update(podIP=ip, podIPs=[{"ip": ip}], hostIP="127.0.0.1", startTime=_now())
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}]
        self._stamp(pod)
        meta = pod["metadata"]
        threading.Thread(target=self._kubelet, args=(meta["namespace"], meta["name"], node), daemon=True).start()

    def _kubelet(self, ns: str, name: str, node: FakeNode) -> None:
        with self._cond:
            pod = self._objects.get(("Pod", ns, name))
            if pod is None:
                return
            container = pod["spec"]["containers"][0]
            if container.get("image") in self.unpullable:
                for reason in ("ErrImagePull", "ImagePullBackOff"):
                    self._container_state(
                        pod,
                        {"waiting": {"reason": reason, "message": f'Back-off pulling image "{container["image"]}"'}},
                    )
                self._stamp(pod)
                return
            try:
                env = self._env(pod, container)
            except _ApiError as exc:
                self._container_state(
                    pod, {"waiting": {"reason": "CreateContainerConfigError", "message": exc.message}}
                )
                self._stamp(pod)
                return
            argv = [*(container.get("command") or []), *(container.get("args") or [])]
            pod_dir = self.work_dir / "pods" / ns / name
            pod_dir.mkdir(parents=True, exist_ok=True)
            gpus = int(_requests(pod).get("nvidia.com/gpu", 0))
            if gpus:
                env["PATH"] = f"{self._device_plugin(pod_dir, node, gpus)}{os.pathsep}{env.get('PATH', '')}"
            try:
                out = open(pod_dir / "log", "ab")  # noqa: SIM115 - handed to the child, closed below
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=pod_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                out.close()
            except OSError as exc:
                self._container_state(
                    pod, {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(exc)}}
                )
                pod["status"]["phase"] = "Failed"
                self._stamp(pod)
                return
            self._procs[(ns, name)] = proc
            pod["status"]["phase"] = "Running"
            self._container_state(pod, {"running": {"startedAt": _now()}}, ready=True)
            self._stamp(pod)
        rc = proc.wait()
        with self._cond:
            pod = self._objects.get(("Pod", ns, name))
            if pod is None or self._procs.pop((ns, name), None) is None:
                return  # deleted meanwhile
            pod["status"]["phase"] = "Succeeded" if rc == 0 else "Failed"
            reason = "Completed" if rc == 0 else "Error"
            self._container_state(pod, {"terminated": {"exitCode": rc, "reason": reason, "finishedAt": _now()}})
            self._stamp(pod)

    def _container_state(self, pod: dict[str, Any], state: dict[str, Any], ready: bool = False) -> None:
        c = pod["spec"]["containers"][0]
        pod["status"]["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "started": ready,
                "state": state,
            }
        ]

    def _env(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
        env = dict(self.base_env)
        ns = pod["metadata"]["namespace"]
        for item in container.get("env") or []:
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self._objects.get(("Secret", ns, ref["name"]))
                if secret is None or ref["key"] not in (secret.get("data") or {}):
                    raise _ApiError(404, "NotFound", f'secret "{ref["name"]}" not found')
                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            elif "fieldRef" in source:
                env[item["name"]] = str(_field(pod, source["fieldRef"]["fieldPath"]))
            else:
                env[item["name"]] = str(item.get("value", ""))
        return env

    def _device_plugin(self, pod_dir: Path, node: FakeNode, gpus: int) -> Path:
        """A stand-in nvidia-smi answering the agent's query with the pod's GPUs."""
        bin_dir = pod_dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        product = (node.gpu_product or "NVIDIA-GPU").replace("-", " ", 1)
        rows = "\n".join(f"{i}, {product}, 81920" for i in range(gpus))
        script = bin_dir / "nvidia-smi"
        script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{rows}\nEOF\n")
        script.chmod(0o755)
        return bin_dir


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get("value", "")


def _field(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, Mapping) else ""
    return value


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


_KINDS = {"pods": "Pod", "secrets": "Secret", "events": "Event", "nodes": "Node", "namespaces": "Namespace"}
_RESOURCES = [
    {"name": "namespaces", "namespaced": False, "kind": "Namespace", "verbs": ["get", "list"]},
    {"name": "nodes", "namespaced": False, "kind": "Node", "verbs": ["get", "list"]},
    {"name": "events", "namespaced": True, "kind": "Event", "verbs": ["list"]},
    {
        "name": "secrets",
        "namespaced": True,
        "kind": "Secret",
        "verbs": ["create", "delete", "deletecollection", "get", "list"],
    },
    {
        "name": "pods",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "watch"],
    },
    {"name": "pods/log", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
]


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubernetes
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read their own logs
        return

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k.lower(): v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""  # kubectl sends DeleteOptions bodies
        self.api.requests.append((method, url.path))
        if self.api.token:
            # The scheme is case-insensitive (RFC 7235); the in-cluster loader sends "bearer".
            scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or credential != self.api.token:
                return self._send(401, _status_body(401, "Unauthorized", "Unauthorized"))
        try:
            self._dispatch(method, url.path.strip("/").split("/"), query, raw)
        except _ApiError as exc:
            self._send(exc.code, _status_body(exc.code, exc.reason, exc.message))
        except (ValueError, KeyError) as exc:
            self._send(400, _status_body(400, "BadRequest", f"bad request: {exc}"))

    def _dispatch(self, method: str, parts: list[str], query: dict[str, str], raw: bytes) -> None:
        api = self.api
        if parts == ["version"]:
            return self._send(
                200, {"major": "1", "minor": "29", "gitVersion": "v1.29.0-fake", "platform": "linux/amd64"}
            )
        if parts == ["api"]:
            return self._send(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
                },
            )
        if parts == ["apis"]:
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if parts == ["api", "v1"]:
            return self._send(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": _RESOURCES})
        if parts[:2] != ["api", "v1"] or len(parts) < 3:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        rest = parts[2:]
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        kind = _KINDS.get(rest[0])
        if kind is None:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        selector, fields = query.get("labelselector", ""), query.get("fieldselector", "")
        if len(rest) == 1:
            if method == "GET" and query.get("watch", "").lower() in ("true", "1"):
                return self._stream(
                    api.watch(ns, query.get("resourceversion", ""), selector, float(query.get("timeoutseconds", "60")))
                )
            if method == "GET":
                return self._send(200, api.list_objects(kind, ns, selector, fields))
            if method == "POST" and ns is not None:
                return self._send(201, api.create(kind, ns, json.loads(raw or b"{}")))
            if method == "DELETE" and ns is not None:
                listed = api.list_objects(kind, ns, selector)
                for item in listed["items"]:
                    api.delete(kind, ns, item["metadata"]["name"])
                return self._send(200, listed)
        elif len(rest) == 2 and method == "GET":
            return self._send(200, api.get(kind, ns or "", rest[1]))
        elif len(rest) == 2 and method == "PUT" and ns is not None and kind == "Secret":
            return self._send(200, api.replace(kind, ns, rest[1], json.loads(raw or b"{}")))
        elif len(rest) == 2 and method == "DELETE" and ns is not None:
            return self._send(200, api.delete(kind, ns, rest[1]))
        elif len(rest) == 3 and rest[2] == "log" and kind == "Pod" and ns is not None and method == "GET":
            api.get("Pod", ns, rest[1])
            return self._send(200, api.pod_log(ns, rest[1]), "text/plain")
        raise _ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")
