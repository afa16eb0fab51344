"""``python -m styx.health``: a real gRPC server on loopback, checked in and out of process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import free_port
from styx import health
from styx.common.server import start_server


def test_serving_server_exits_zero_and_a_shut_down_one_exits_one() -> None:
    running = start_server("127.0.0.1", 0, "tok", lambda server: [])
    try:
        endpoint = f"127.0.0.1:{running.port}"
        assert health.main([endpoint]) == 0
        # The console form the images run, in its own process.
        proc = subprocess.run([sys.executable, "-m", "styx.health", endpoint], capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        running.health.enter_graceful_shutdown()
        assert health.main([endpoint]) == 1
    finally:
        running.server.stop(0)


def test_nothing_listening_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert health.main([f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 1
    assert "is not serving" in capsys.readouterr().err


def test_own_endpoint_comes_from_the_service_and_its_port_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert health.own_endpoint({"STYX_SERVICE": "broker"}) == "127.0.0.1:50052"
    assert health.own_endpoint({"STYX_SERVICE": "broker", "STYX_BROKER_PORT": "7001"}) == "127.0.0.1:7001"
    monkeypatch.setenv("STYX_SERVICE", "nonsense")
    assert health.main([]) == 1
    monkeypatch.setenv("STYX_SERVICE", "agent")  # no server in the agent image: nothing to fail
    assert health.main([]) == 0
