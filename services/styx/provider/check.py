"""A cached ``check()``: the reconcile loop asks every few seconds, credentials probes are slow.

``CachedCheck(probe, ok_ttl_s, fail_ttl_s, clock)`` calls ``probe`` at most once per TTL
(a failure may be remembered for a different time than a success) and never raises: a
probe that raises reports the provider disabled with the exception's type.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from styx.common.clock import SYSTEM_CLOCK, Clock
from styx.provider.types import ProviderStatus

log = logging.getLogger(__name__)


class CachedCheck:
    """A provider status probe whose answer is reused for a while. Thread-safe."""

    def __init__(
        self,
        probe: Callable[[], ProviderStatus],
        ok_ttl_s: float = 60.0,
        fail_ttl_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if ok_ttl_s < 0 or (fail_ttl_s is not None and fail_ttl_s < 0):
            raise ValueError("CachedCheck: TTLs must be >= 0 seconds")
        self._probe = probe
        self._ok_ttl_s = ok_ttl_s
        self._fail_ttl_s = ok_ttl_s if fail_ttl_s is None else fail_ttl_s
        self._clock = clock or SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._cached: tuple[float, ProviderStatus] | None = None  # (valid until, status)

    def __call__(self) -> ProviderStatus:
        """The cached status, or a fresh probe once the cached one expired."""
        with self._lock:
            if self._cached is not None and self._clock.monotonic() < self._cached[0]:
                return self._cached[1]
        # Probe outside the lock: a slow probe must not block callers that could use the cache.
        try:
            status = self._probe()
        except Exception as exc:
            log.warning("provider check probe raised", exc_info=exc)
            status = ProviderStatus(False, f"check failed ({type(exc).__name__})", "see the provisioner log")
        ttl = self._ok_ttl_s if status.enabled else self._fail_ttl_s
        with self._lock:
            self._cached = (self._clock.monotonic() + ttl, status)
        return status

    def invalidate(self) -> None:
        """Forget the cached answer, so the next call probes again."""
        with self._lock:
            self._cached = None
