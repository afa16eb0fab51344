"""Domain errors, each carrying the gRPC status code it maps to.

Core logic raises these; ``styx.common.status`` turns them into a google.rpc.Status with
the message and details (ErrorInfo always, BadRequest field violations, RetryInfo on
UNAVAILABLE and RESOURCE_EXHAUSTED). Any other exception becomes INTERNAL with a reference
id, and its traceback goes to the log only (clients never see ``str(exception)`` of an
unexpected error).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

# Error messages travel in a trailer (grpc-message): a bad value quoted whole (a 1 MB name)
# would overflow the client's header limit and turn INVALID_ARGUMENT into RESOURCE_EXHAUSTED.
QUOTE_CHARS = 48


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of a client-supplied value, cut to a short prefix with its full length."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= limit + 2 else text[:limit] + "..."


class StyxError(Exception):
    """Base of every error a client may see.

    ``code`` is the gRPC status to send; ``reason`` is the ErrorInfo reason (UPPER_SNAKE,
    stable: clients branch on it); ``metadata`` goes into ErrorInfo; ``violations`` are
    (field path, description) pairs of a BadRequest; ``retry_after_s`` becomes RetryInfo.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"
    default_retry_after_s: float | None = None

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations)
        self.retry_after_s = self.default_retry_after_s if retry_after_s is None else retry_after_s


class InvalidArgument(StyxError):
    """The request is malformed; the message names the field and the fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not violations:
            # "field: what is wrong" is the house style; give it to BadRequest as well.
            field, sep, description = message.partition(": ")
            if sep and " " not in field:
                violations = [(field, description)]
        super().__init__(message, reason=reason, metadata=metadata, violations=violations)


class NotFound(StyxError):
    """An id in the request does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(StyxError):
    """The request conflicts with something that exists (a request_id reused for another payload)."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(StyxError):
    """The request conflicts with the current state."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(StyxError):
    """A limit was reached (queue size, quota)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"
    default_retry_after_s = 5.0


class Unavailable(StyxError):
    """A dependency is down; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"
    default_retry_after_s = 1.0


class Aborted(StyxError):
    """A concurrent request got in the way (the same request_id still in progress); retry."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"
    default_retry_after_s = 0.5


class Unauthenticated(StyxError):
    """Missing or wrong credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(StyxError):
    """The credentials are valid but do not cover this request (another node, a used join token)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"
