"""The local control plane over TLS, driven by `sky` as a user would.

Two ways in: the user's own certificate in ``STYX_TLS_CERT`` / ``STYX_TLS_KEY`` /
``STYX_TLS_CA`` (which used to fail: `sky local up` health-checked its TLS services in
plaintext and gave up with WRONG_VERSION_NUMBER), and ``sky local up --tls``, which makes
a CA for the home and keeps serving TLS on later starts. In both a task runs, so every
hop (CLI -> scheduler, services between themselves, agent -> services) verified its peer.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import SkyCli, make_sky_cli

pytest.importorskip("cryptography.x509")
from pki import make_pki


@pytest.fixture
def tls_sky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SkyCli]:
    yield from make_sky_cli(tmp_path_factory, "tls-home")


def _health(endpoint: str, ca: Path | None) -> str:
    """The scheduler's health over TLS verified by ``ca``, or in plaintext (``ca`` None)."""
    if ca is None:
        channel = grpc.insecure_channel(endpoint)
    else:
        channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(ca.read_bytes()))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            return f"error: {exc.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_sky_local_up_serves_the_users_own_certificate(tls_sky: SkyCli, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    env = {"STYX_TLS_CERT": str(pki["cert"]), "STYX_TLS_KEY": str(pki["key"]), "STYX_TLS_CA": str(pki["ca"])}
    up = tls_sky("local", "up", timeout=90, **env)
    assert up.returncode == 0, up.stderr  # was: "did not become healthy" (WRONG_VERSION_NUMBER)
    assert "TLS: on" in up.stdout
    run = tls_sky("run", "--", "echo", "over-tls", timeout=90, **env)
    assert run.returncode == 0 and "over-tls" in run.stdout, run.stderr
    endpoint = json.loads((tls_sky.home / "local" / "plane.json").read_text())["scheduler"]
    assert _health(endpoint, pki["ca"]) == "SERVING"
    assert _health(endpoint, None).startswith("error:")  # it really is TLS
    assert _health(endpoint, pki["other_ca"]).startswith("error:")  # and verified


def test_sky_local_up_tls_makes_a_ca_and_keeps_tls_across_restarts(tls_sky: SkyCli) -> None:
    up = tls_sky.ok("local", "up", "--tls", timeout=90)
    tls_dir = tls_sky.home / "local" / "tls"
    ca = tls_dir / "ca.pem"
    assert f"clients verify against {ca}" in up.stdout
    assert stat.S_IMODE((tls_dir / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    assert "PRIVATE KEY" not in ca.read_text() and "PRIVATE KEY" not in (tls_dir / "cert.pem").read_text()

    # Plain `sky` commands find the CA themselves: no STYX_TLS_* in their environment.
    run = tls_sky.ok("run", "--", "echo", "verified", timeout=90)
    assert "verified" in run.stdout
    endpoint = json.loads((tls_sky.home / "local" / "plane.json").read_text())["scheduler"]
    assert _health(endpoint, ca) == "SERVING" and _health(endpoint, None).startswith("error:")

    # Asking for plaintext while it serves TLS says what to do instead of half-switching.
    clash = tls_sky("local", "up", "--no-tls")
    assert clash.returncode != 0 and "running with TLS; `sky local down`, then `sky local up`" in clash.stderr
    assert len(clash.stderr.strip().splitlines()) <= 2, clash.stderr

    # A later start of this home (any command) serves TLS again with the same CA.
    tls_sky.ok("local", "down", timeout=90)
    again = tls_sky.ok("run", "--", "echo", "again", timeout=90)
    assert "again" in again.stdout
    endpoint = json.loads((tls_sky.home / "local" / "plane.json").read_text())["scheduler"]
    assert _health(endpoint, ca) == "SERVING"

    # --no-tls on a stopped plane goes back to plaintext and forgets the CA.
    tls_sky.ok("local", "down", timeout=90)
    tls_sky.ok("local", "up", "--no-tls", timeout=90)
    endpoint = json.loads((tls_sky.home / "local" / "plane.json").read_text())["scheduler"]
    assert _health(endpoint, None) == "SERVING" and not tls_dir.exists()


def test_tls_flags_belong_to_local_up(tls_sky: SkyCli) -> None:
    proc = tls_sky("local", "status", "--tls")
    assert proc.returncode == 2 and "--tls / --no-tls go with `sky local up`" in proc.stderr
