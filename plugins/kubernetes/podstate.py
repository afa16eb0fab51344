"""Reading pods and API failures: the pod states the provider acts on, and errors as the kit's
``ProviderError`` (one line, naming the server, never the credentials)."""

from __future__ import annotations

from typing import Any

from styx.provider import InstanceStatus, ProviderError, ProviderErrorKind, clip, kind_of_status

_IMAGE_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def unschedulable(pod: Any) -> str | None:
    """The PodScheduled=False message, None while scheduling is not known to have failed."""
    for cond in (pod.status.conditions if pod.status else None) or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return str(cond.message or cond.reason or "unschedulable")
    return None


def image_error(pod: Any) -> str:
    for status in (pod.status.container_statuses if pod.status else None) or []:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in _IMAGE_ERRORS:
            return f"{waiting.reason}: {clip(str(waiting.message or ''), 200)}"
    return ""


def status_of(pod: Any) -> InstanceStatus:
    if pod.metadata.deletion_timestamp:
        return InstanceStatus.TERMINATING
    phase = pod.status.phase if pod.status else ""
    if phase == "Pending":
        return InstanceStatus.PENDING
    if phase in ("Succeeded", "Failed"):
        return InstanceStatus.TERMINATED  # the agent is gone; the pod object is garbage
    return InstanceStatus.RUNNING


def why(exc: BaseException, server: str) -> str:
    """One line on why a call failed, never the credentials."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return f"{server} refused the credentials (HTTP {exc.status})"
        return f"{server} answered HTTP {exc.status} {exc.reason}"
    if _caused_by_tls(exc):
        return f"cannot verify {server}'s TLS certificate (CERTIFICATE_VERIFY_FAILED): check the CA it is given"
    return f"cannot reach {server} ({type(exc).__name__})"


def _caused_by_tls(exc: BaseException) -> bool:
    """Whether a TLS verification failure is behind ``exc`` (urllib3 wraps it in MaxRetryError)."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        reason = getattr(seen, "reason", None)
        seen = reason if isinstance(reason, BaseException) else (seen.__cause__ or seen.__context__)
    return False


def error(exc: BaseException, doing: str, server: str) -> ProviderError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ApiException):
        kind = kind_of_status(int(exc.status or 0))
        if exc.status == 403 and b"exceeded quota" in (exc.body or b"" if isinstance(exc.body, bytes) else b""):
            kind = ProviderErrorKind.QUOTA
        return ProviderError(kind, f"{doing}: HTTP {exc.status} {exc.reason}")
    return ProviderError(ProviderErrorKind.INTERNAL, f"{doing}: {why(exc, server)}")
