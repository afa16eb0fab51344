"""Contract harness for the local provider: nodes are agent processes on this machine."""

from __future__ import annotations

import os
from pathlib import Path

from styx.provider import Offer, Provider
from styx_plugins.local.provider import LocalProvider


class LocalHarness:
    """The local provider with its own STYX_HOME; ground truth is /proc."""

    name = "local"
    supports_spot = False

    def __init__(self, home: Path) -> None:
        self._provider = LocalProvider(home=home)

    def provider(self) -> Provider:
        return self._provider

    def offer(self) -> Offer:
        return self._provider.offers()[0]

    def live_instances(self) -> dict[str, str]:
        out = {}
        for inst in self._provider.list_instances():
            pid = int(inst.instance_id.split("-", 1)[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            out[inst.instance_id] = inst.node_id
        return out

    def is_spot(self, instance_id: str) -> bool:
        return False

    def boot_env(self, instance_id: str) -> dict[str, str]:
        return {}

    def close(self) -> None:
        for instance_id in self.live_instances():
            self._provider.terminate(instance_id)


def make_harness(tmp_path: Path) -> LocalHarness:
    """Contract-suite entry point (see conftest.py)."""
    return LocalHarness(tmp_path / "local-home")
