"""The pluggy markers of Styx's plugin system (project name "styx").

A plugin module decorates its ``styx_provider`` function with ``hookimpl``; the hook's
specification lives in ``styx.provisioner.hookspecs``.
"""

from __future__ import annotations

import pluggy

#: pluggy project name shared by the markers and the plugin manager.
PROJECT_NAME = "styx"
#: Entry-point group a plugin package registers its module under.
ENTRY_POINT_GROUP = "styx.providers"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
