"""EC2 for tests: moto's ThreadedMotoServer (server mode) behind a small HTTP shim.

The real boto3 SDK talks to ``MotoEc2.endpoint`` over HTTP (in this process or, through
``AWS_ENDPOINT_URL_EC2``, from the Styx services' processes). The shim forwards every request
to moto unchanged, except that it can:
- answer RunInstances in chosen zones with an EC2 error (``fail_zone``), as EC2 answers an
  InsufficientInstanceCapacity: HTTP 500 with EC2's XML error body;
- hold the response of the next RunInstances after moto created the instance
  (``hold_next_run_instances``), so a test can kill the caller between the cloud call and
  its commit;
- answer a repeated ClientToken with the first response, as EC2 does (moto does not; the
  provider must not rely on it, and the contract suite uses the plain moto endpoint).

``shared_moto()`` starts one per test process (the first EC2 request builds moto's backend,
which takes seconds); ``reset()`` empties it between tests.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import logging
import os
import threading
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass
class Hold:
    """A held RunInstances: ``held`` is set once moto made the instance; ``release()`` lets
    the (probably dead) caller have its response."""

    held: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Let the held response go."""
        self.released.set()


class MotoEc2:
    """A moto server plus the fault shim; see the module docstring."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer
        from werkzeug.serving import make_server

        # Cheap resets; RunInstances still accepts any image id.
        os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_endpoint = f"http://{host}:{port}"
        self._lock = threading.Lock()
        self._faults: dict[str, str] = {}
        self._hold: Hold | None = None
        self._tokens: dict[str, tuple[str, list[tuple[str, str]], bytes]] = {}
        self.run_instances_calls: list[dict[str, str]] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="aws-shim", daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"

    # -- test controls -----------------------------------------------------------------------

    def fail_zone(self, zone: str, code: str = "InsufficientInstanceCapacity") -> None:
        """Answer every RunInstances placed in ``zone`` with the EC2 error ``code``."""
        with self._lock:
            self._faults[zone] = code

    def hold_next_run_instances(self) -> Hold:
        """Hold the response of the next RunInstances (after moto handled it)."""
        hold = Hold()
        with self._lock:
            self._hold = hold
        return hold

    def reset(self) -> None:
        """Forget every resource, fault, hold and recorded call."""
        with self._lock:
            self._faults.clear()
            if self._hold is not None:
                self._hold.release()
            self._hold = None
            self._tokens.clear()
            self.run_instances_calls.clear()
        request = urllib.request.Request(f"{self.moto_endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=60) as reply:
            reply.read()

    def env(self) -> dict[str, str]:
        """Environment for a Styx service process that must use this endpoint."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL_EC2": self.endpoint, "AWS_DEFAULT_REGION": REGION}

    def client(self, region: str = REGION) -> Any:
        """A boto3 EC2 client on the moto endpoint directly (ground truth, no faults)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "ec2",
            region_name=region,
            endpoint_url=self.moto_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )

    def styx_instances(self, regions: Iterable[str] = (REGION,), states: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Ground truth: Styx-tagged instances (default: every not-terminated one)."""
        wanted = list(states) or ["pending", "running", "stopping", "stopped", "shutting-down"]
        out = []
        for region in regions:
            reply = self.client(region).describe_instances(
                Filters=[
                    {"Name": "tag:styx-managed", "Values": ["true"]},
                    {"Name": "instance-state-name", "Values": wanted},
                ]
            )
            out += [i for r in reply["Reservations"] for i in r["Instances"]]
        return out

    def user_data(self, instance_id: str, region: str = REGION) -> str:
        """The instance's user data (its boot script), decoded."""
        reply = self.client(region).describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        return base64.b64decode(reply["UserData"]["Value"]).decode()

    def stop(self) -> None:
        """Stop the shim and moto."""
        with self._lock:
            if self._hold is not None:
                self._hold.release()
        self._server.shutdown()
        self._moto.stop()

    # -- the shim ----------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()} if body else {}
        hold = None
        if form.get("Action") == "RunInstances":
            with self._lock:
                self.run_instances_calls.append(form)
                zone = form.get("Placement.AvailabilityZone", "")
                code = self._faults.get(zone)
                token = form.get("ClientToken", "")
                cached = self._tokens.get(token) if token else None
                if not code and cached is None and self._hold is not None:
                    hold, self._hold = self._hold, None
            if code:
                return _error(start_response, code, f"We currently do not have sufficient capacity in {zone}.")
            if cached is not None:
                status, headers, data = cached
                start_response(status, headers)
                return [data]
        status, headers, data = self._forward(environ, body)
        if form.get("Action") == "RunInstances" and status.startswith("200") and form.get("ClientToken"):
            with self._lock:
                self._tokens.setdefault(form["ClientToken"], (status, headers, data))
        if hold is not None:
            hold.held.set()
            hold.released.wait(120)
        start_response(status, headers)
        return [data]

    def _forward(self, environ: dict[str, Any], body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        target = urlsplit(self.moto_endpoint)
        path = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
        if environ.get("QUERY_STRING") and "?" not in path:
            path += "?" + environ["QUERY_STRING"]
        headers = {
            key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        try:
            conn.request(environ["REQUEST_METHOD"], path, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            out_headers = [(k, v) for k, v in reply.getheaders() if k.lower() not in _HOP_HEADERS]
            out_headers.append(("Content-Length", str(len(data))))
            return f"{reply.status} {reply.reason}", out_headers, data
        finally:
            conn.close()


def _error(start_response: StartResponse, code: str, message: str) -> list[bytes]:
    data = (
        f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
        f"<Message>{message}</Message></Error></Errors><RequestID>styx-shim</RequestID></Response>"
    ).encode()
    start_response("500 Internal Server Error", [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))])
    return [data]


_SHARED: MotoEc2 | None = None
_SHARED_LOCK = threading.Lock()


def shared_moto() -> MotoEc2:
    """The test process's MotoEc2, started on first use and stopped at exit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = MotoEc2()
            atexit.register(_SHARED.stop)
        return _SHARED
