"""Hook specifications of the provisioner's plugin system (pluggy project name "styx").

This module is the whole plugin API: every hook is an empty, typed function below with a
docstring saying when it is called, its parameters and how results combine. A plugin is a
module (or object) with functions of the same names decorated with ``hookimpl``::

    from styx.provider import hookimpl

    @hookimpl
    def styx_provider():
        return MyCloudProvider()

and is registered by a package entry point in the group ``styx.providers``::

    [project.entry-points."styx.providers"]
    mycloud = "mycloud_styx.provider"

The built-in providers (local, ...) are plugins registered through that same door.
Setting ``STYX_DISABLE_PLUGIN_AUTOLOAD`` turns entry-point loading off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The markers live in the plugin kit, so a plugin imports ``styx.provider`` alone.
from styx.provider.hooks import PROJECT_NAME, hookimpl, hookspec

if TYPE_CHECKING:
    from styx.provider.protocol import Provider

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec", "styx_provider"]


@hookspec
def styx_provider() -> Provider | None:
    """Return the provider this plugin contributes, or None to contribute nothing.

    Called once per plugin when the provisioner builds its provider table (at start-up,
    after all plugins are registered). Every plugin's result is collected (this is not a
    first-result hook); None results are skipped.

    :return: an object implementing ``styx.provider.Provider``. Its ``name``
        must be unique among loaded providers; a later duplicate is reported disabled.
        Building it must be cheap and must not fail when the provider's SDK or
        credentials are missing: import SDKs lazily and report the problem from
        ``check()`` (enabled=False, with a reason and an install hint) instead.
    """
