"""Rich gRPC errors (google.rpc.Status) both ways: StyxError -> status, status -> StyxError.

The server sends every error as a google.rpc.Status in the ``grpc-status-details-bin``
trailer with an ``ErrorInfo`` (reason, domain ``styx.dev``, metadata), a ``BadRequest``
with one field violation per bad field (INVALID_ARGUMENT), and a ``RetryInfo`` on
UNAVAILABLE, RESOURCE_EXHAUSTED and ABORTED. Clients in any language read them with their
gRPC's status helpers; Python clients call ``error_from_rpc`` (the one place codes map to
exceptions).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from styx.common import errors

DOMAIN = "styx.dev"
# grpc-message lives in a trailer next to the details; clients' header limits start at 8 KiB.
MAX_MESSAGE_CHARS = 2000

_BY_CODE: dict[grpc.StatusCode, type[errors.StyxError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.ResourceExhausted,
        errors.Unavailable,
        errors.Aborted,
        errors.Unauthenticated,
        errors.PermissionDenied,
    )
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def short(message: str) -> str:
    """``message`` cut to what fits a trailer."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."


def to_status(exc: errors.StyxError) -> grpc.Status:
    """The grpc.Status (code, message, details trailer) a server sends for ``exc``."""
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=exc.metadata)),
    ]
    if exc.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=short(path), description=short(what))
                for path, what in exc.violations
            ]
        )
        details.append(_pack(bad))
    if exc.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(datetime.timedelta(seconds=exc.retry_after_s if math.isfinite(exc.retry_after_s) else 0))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=exc.code.value[0], message=short(exc.message), details=details)
    return rpc_status.to_status(status)


def internal_status(ref: str) -> grpc.Status:
    """The status of an unexpected error: INTERNAL with only the log reference."""
    exc = errors.StyxError(f"internal error (reference {ref}); see the service log", metadata={"ref": ref})
    return to_status(exc)


@dataclass
class ErrorDetails:
    """What a client learns from an error's google.rpc.Status."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after_s: float | None = None


def details_of(err: grpc.RpcError) -> ErrorDetails:
    """Parse the details trailer of ``err`` (empty ErrorDetails when there is none)."""
    out = ErrorDetails()
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return out
    if status is None:
        return out
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            out.reason, out.domain, out.metadata = info.reason, info.domain, dict(info.metadata)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            out.violations = [(v.field, v.description) for v in bad.field_violations]
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            out.retry_after_s = retry.retry_delay.ToTimedelta().total_seconds()
    return out


def error_from_rpc(err: grpc.RpcError, prefix: str = "") -> errors.StyxError:
    """The StyxError a failed call stands for, details included, its message after
    ``prefix``. Codes without a class of their own (DEADLINE_EXCEEDED, CANCELLED, INTERNAL,
    UNKNOWN ...) become a plain StyxError whose ``code`` is the call's."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = prefix + (str(err.details() if hasattr(err, "details") else err) or code.name)
    info = details_of(err)
    cls = _BY_CODE.get(code)
    if cls is None:
        plain = errors.StyxError(message, reason=info.reason or code.name, metadata=info.metadata)
        plain.code = code
        return plain
    if cls is errors.InvalidArgument:
        return errors.InvalidArgument(message, reason=info.reason, metadata=info.metadata, violations=info.violations)
    return cls(
        message,
        reason=info.reason,
        metadata=info.metadata,
        violations=info.violations,
        retry_after_s=info.retry_after_s,
    )
