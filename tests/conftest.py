"""Shared fixtures for every test suite (unit, integration, e2e, benchmarks).

- Every test gets its own STYX_HOME under tmp_path (autouse), and the client settings of
  the developer's shell (STYX_ENDPOINT, STYX_TOKEN ...) are removed, so no test ever
  touches ~/.styx or a real control plane.
- ``postgres_url`` skips when PostgreSQL at 127.0.0.1:5432 is unreachable.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `from helpers import ...` work in every suite, whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Client-side settings that would point tests at a real control plane.
_CLIENT_ENV = (
    "STYX_ENDPOINT",
    "STYX_BROKER_ENDPOINT",
    "STYX_PROVISIONER_ENDPOINT",
    "STYX_SCHEDULER_ENDPOINT",
    "STYX_TOKEN",
    "STYX_TOKEN_FILE",
)


# Cloud credentials of the developer's shell: without them no test can reach a real cloud
# (the cloud tests point their SDKs at local endpoints with dummy credentials of their own).
_CLOUD_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUDSDK_CONFIG",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_SUBSCRIPTION_ID",
)


@pytest.fixture(autouse=True)
def _no_real_cloud_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset cloud credentials and point the SDKs' credential files at nothing."""
    for name in _CLOUD_ENV:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "no-cloud-credentials"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "aws-config"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(empty / "gcloud"))
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(empty / "azure"))


@pytest.fixture(autouse=True)
def _isolated_styx_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point STYX_HOME at a fresh directory for each test and drop client settings."""
    home = tmp_path / "styx-home"
    home.mkdir()
    monkeypatch.setenv("STYX_HOME", str(home))
    for name in _CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def styx_home(_isolated_styx_home: Path) -> Path:
    """This test's STYX_HOME (already exported in the environment)."""
    return _isolated_styx_home


def _pg_reachable(url: str) -> str:
    """'' when a connection to ``url`` works, else why not."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 5432
    try:
        with socket.create_connection((host, port), timeout=1.0):
            pass
    except OSError as exc:
        return f"PostgreSQL at {host}:{port} is unreachable ({exc.strerror or exc})"
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    try:
        with psycopg.connect(_libpq_url(url), connect_timeout=3):
            pass
    except psycopg.Error as exc:
        return f"cannot connect to {parsed.render_as_string(hide_password=True)}: {str(exc).strip()}"
    return ""


def _libpq_url(url: str) -> str:
    """SQLAlchemy URLs may name a driver (postgresql+psycopg://); libpq wants postgresql://."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the test database (STYX_TEST_PG_URL, default postgres@127.0.0.1:5432/test).

    Skips the test when PostgreSQL is unreachable. Tables persist between tests: use
    ``postgres_fresh_url`` when a test needs an empty database.
    """
    url = os.environ.get("STYX_TEST_PG_URL", DEFAULT_PG_URL)
    why = _pg_reachable(url)
    if why:
        pytest.skip(why)
    return url


@pytest.fixture
def postgres_fresh_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the same server for one test; dropped afterwards."""
    import psycopg

    name = f"styx_test_{uuid.uuid4().hex[:12]}"
    base = _libpq_url(postgres_url)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    from sqlalchemy.engine import make_url

    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
