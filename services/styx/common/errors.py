"""Domain errors, each carrying the gRPC status code it maps to.

Core logic raises these; ``styx.common.server`` turns them into a status with the message
for the client. Any other exception becomes INTERNAL with a reference id, and its
traceback goes to the log only (clients never see ``str(exception)`` of an unexpected error).
"""

from __future__ import annotations

import grpc


class StyxError(Exception):
    """Base of every error a client may see; ``code`` is the gRPC status to send."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(StyxError):
    """The request is malformed; the message names the field and the fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(StyxError):
    """An id in the request does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(StyxError):
    """The request conflicts with the current state."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(StyxError):
    """A limit was reached (queue size, quota)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(StyxError):
    """A dependency is down; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(StyxError):
    """Missing or wrong credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(StyxError):
    """The credentials are valid but do not cover this request (another node, a used join token)."""

    code = grpc.StatusCode.PERMISSION_DENIED
