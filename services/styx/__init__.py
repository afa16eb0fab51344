"""Styx: run commands and DAGs on the cheapest compute that fits.

Subpackages: ``scheduler``, ``broker``, ``provisioner``, ``agent`` (one per process),
``common`` (shared runtime) and ``v1`` (generated protobuf stubs of proto/styx/v1).
"""

__version__ = "0.1.0"
