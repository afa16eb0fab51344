"""Mapping Azure SDK exceptions to Styx's provider error kinds.

The broker fails over to the next offer on CAPACITY and QUOTA only, so the capacity and
quota codes Azure Resource Manager returns (synchronously on the PUT, or as the failed
long-running operation's ``error.code``) are listed here explicitly. Messages keep Azure's
code and text (they name SKUs, regions and quotas, never credentials), shortened.
"""

from __future__ import annotations

from styx.provider import ErrorCodes, ProviderError, ProviderErrorKind, clip

# Azure has no capacity in that zone / region for that size (the broker tries elsewhere).
CAPACITY_CODES = frozenset(
    {
        "SkuNotAvailable",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
        "AllocationFailedSpot",
        "SpotCapacityNotAvailable",
    }
)
# Subscription limits (regional / family vCPU quota, spot quota).
QUOTA_CODES = frozenset({"QuotaExceeded", "OperationNotAllowedQuota", "LowPriorityQuotaExceeded"})
AUTH_CODES = frozenset(
    {
        "AuthenticationFailed",
        "AuthorizationFailed",
        "InvalidAuthenticationToken",
        "ExpiredAuthenticationToken",
        "LinkedAuthorizationFailed",
        "InvalidAuthenticationTokenTenant",
    }
)
_MAX_MESSAGE = 400
ARM_CODES = ErrorCodes(
    capacity=CAPACITY_CODES,
    quota=QUOTA_CODES,
    auth=AUTH_CODES,
    # ARM reports exhausted vCPU quota as OperationNotAllowed with the word in the message.
    patterns=((".*QuotaExceeded", ProviderErrorKind.QUOTA),),
    message_words=(("OperationNotAllowed", "quota", ProviderErrorKind.QUOTA),),
)


def error_code(exc: BaseException) -> str:
    """The ARM error code of an azure-core ``HttpResponseError`` ('' when there is none)."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) if error is not None else None
    return str(code or "")


def classify(exc: BaseException, action: str) -> ProviderError:
    """Turn an exception raised by an Azure SDK call into a ``ProviderError``."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientAuthenticationError):
        # Raised by credentials (no login found, bad secret) and for 401 answers.
        return ProviderError(
            ProviderErrorKind.AUTH,
            f"azure {action}: authentication failed: {_short(exc)}; "
            "sign in (az login) or set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET",
        )
    if isinstance(exc, ServiceRequestError):
        return ProviderError(ProviderErrorKind.INTERNAL, f"azure {action}: cannot reach Azure: {_short(exc)}")
    if isinstance(exc, HttpResponseError):
        code = error_code(exc)
        message = getattr(getattr(exc, "error", None), "message", None) or exc.reason or ""
        text = f"azure {action}: {code or exc.status_code}: {clip(str(message), _MAX_MESSAGE)}"
        return ProviderError(kind_of(code, exc.status_code, str(message)), text)
    return ProviderError(ProviderErrorKind.INTERNAL, f"azure {action}: {type(exc).__name__}: {_short(exc)}")


def kind_of(code: str, status: int | None, message: str = "") -> ProviderErrorKind:
    """The Styx error kind of an ARM error ``code`` / HTTP ``status``."""
    return ARM_CODES.kind_of([code], status, message)


def _short(exc: BaseException) -> str:
    return clip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, _MAX_MESSAGE)
