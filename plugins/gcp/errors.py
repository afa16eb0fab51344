"""Mapping Compute Engine failures to Styx's ProviderError kinds.

Two shapes of failure reach us: an HTTP error on the call itself (google.api_core raises
``GoogleAPICallError`` subclasses carrying the status and the ``errors[].reason`` list of
the JSON error body), and an operation that finishes DONE with ``error.errors[].code``
(capacity and quota problems of an insert usually arrive this way, after the call
returned 200). Codes are the documented ones (cloud.google.com/compute/docs/troubleshooting).

Messages are built from the API's error codes and messages, which name resources, never
credentials; the Styx token is never part of a request that could echo it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from styx.provider import ErrorCodes, ProviderError, ProviderErrorKind, kind_of_status

CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "RESOURCE_POOL_EXHAUSTED",
        "STOCKOUT",
        "RESOURCE_EXHAUSTED",
    }
)
QUOTA_CODES = frozenset({"QUOTA_EXCEEDED", "QUOTAEXCEEDED", "LIMITEXCEEDED", "RATELIMITEXCEEDED"})
AUTH_CODES = frozenset(
    {
        "FORBIDDEN",
        "PERMISSION_DENIED",
        "PERMISSIONS_ERROR",
        "ACCESSNOTCONFIGURED",
        "UNAUTHORIZED",
        "AUTHERROR",
        "INSUFFICIENTPERMISSIONS",
    }
)
INVALID_CODES = frozenset(
    {
        "INVALID",
        "INVALID_FIELD_VALUE",
        "INVALID_USAGE",
        "BADREQUEST",
        "RESOURCE_NOT_FOUND",
        "NOTFOUND",
        "ALREADYEXISTS",
        "RESOURCE_ALREADY_EXISTS",
        "UNSUPPORTED_OPERATION",
        "CONDITIONNOTMET",
    }
)


GCE_CODES = ErrorCodes(
    capacity=CAPACITY_CODES, quota=QUOTA_CODES, auth=AUTH_CODES, invalid=INVALID_CODES, ignore_case=True
)


def _reasons(errors: Iterable[Any]) -> list[str]:
    out = []
    for item in errors or ():
        if isinstance(item, dict):
            out.append(str(item.get("reason") or item.get("code") or ""))
        else:
            out.append(str(getattr(item, "reason", "") or getattr(item, "code", "") or ""))
    return out


def from_api_error(exc: BaseException, action: str) -> ProviderError:
    """A ProviderError for an exception raised by a compute_v1 call while doing ``action``."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, auth_exc.GoogleAuthError):
        # Refreshing the token failed: the credentials are wrong or revoked.
        message = f"{action}: Google credentials were refused ({type(exc).__name__})"
        return ProviderError(ProviderErrorKind.AUTH, message)
    if isinstance(exc, gexc.GoogleAPICallError):
        status = int(exc.code or 0) if isinstance(exc.code, int) else 0
        reasons = _reasons(exc.errors)
        if getattr(exc, "reason", None):
            reasons.append(str(exc.reason))
        # A 403 is about permissions unless its reason says quota or rate limit.
        kind = GCE_CODES.kind_of(reasons, status)
        detail = exc.message or type(exc).__name__
        codes = ", ".join(r for r in reasons if r)
        return ProviderError(kind, f"{action}: HTTP {status or '?'} {codes + ': ' if codes else ''}{detail}")
    if isinstance(exc, gexc.RetryError | TimeoutError):
        return ProviderError(ProviderErrorKind.INTERNAL, f"{action}: Compute Engine did not answer in time")
    # requests' ConnectionError and friends: the endpoint is unreachable.
    return ProviderError(ProviderErrorKind.INTERNAL, f"{action}: cannot reach Compute Engine ({type(exc).__name__})")


def from_operation(operation: Any, action: str) -> ProviderError | None:
    """A ProviderError for a DONE operation that failed; None when it succeeded.

    Checks ``error.errors`` itself, not only ``httpErrorStatusCode``: an operation can carry
    errors without the HTTP fields, and must not then pass for a success.
    """
    errors = list(getattr(getattr(operation, "error", None), "errors", []) or [])
    status = int(getattr(operation, "http_error_status_code", 0) or 0)
    if not errors and status < 400:
        return None
    codes = [str(getattr(e, "code", "") or "") for e in errors]
    kind = GCE_CODES.kind_of_codes(codes) or kind_of_status(status or 500)
    messages = "; ".join(f"{c}: {getattr(e, 'message', '')}".strip(": ") for c, e in zip(codes, errors, strict=True))
    if not messages:
        messages = str(getattr(operation, "http_error_message", "") or f"HTTP {status}")
    return ProviderError(kind, f"{action}: {messages}")


def is_not_found(exc: BaseException) -> bool:
    """True for a 404 from the API."""
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.NotFound)


def is_conflict(exc: BaseException) -> bool:
    """True for a 409 (alreadyExists) from the API."""
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.Conflict)
