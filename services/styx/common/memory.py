"""Giving freed memory back to the OS after a large, short-lived allocation (a catalog import).

CPython's allocator and glibc keep freed arenas for reuse, so a process that once built
a few hundred MB of temporaries stays that big. ``trim`` runs a collection and asks glibc
to return free pages (``malloc_trim``); elsewhere (musl, macOS) it only collects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

_libc: ctypes.CDLL | None = None
try:
    _path = ctypes.util.find_library("c")
    _libc = ctypes.CDLL(_path) if _path else None
    if _libc is not None and not hasattr(_libc, "malloc_trim"):
        _libc = None
except OSError:
    _libc = None


def trim() -> None:
    """Collect garbage, then return the heap's free pages to the OS where the C library can."""
    gc.collect()
    if _libc is not None:
        try:
            _libc.malloc_trim(0)
        except Exception as exc:  # a C library without it: nothing to give back
            log.debug("malloc_trim: %s", exc)
