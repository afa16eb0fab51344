"""Exit codes and the CLI's own error type (no grpc here: ``sky --help`` imports this)."""

from __future__ import annotations

# Documented in README.md ("Exit codes"); scripts rely on them, so never renumber.
EXIT_OK = 0
# The task failed (when it has no exit status of its own) or a request was refused.
EXIT_FAILED = 1
# The command line is wrong (unknown flag, bad --cpus value ...).
EXIT_USAGE = 2
# The control plane cannot be reached or the local one cannot be started.
EXIT_UNREACHABLE = 3
# Ctrl-C; the same code a shell reports for SIGINT.
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error to show as ``error: <message>`` and exit with ``exit_code`` (no traceback)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def rpc_error_message(code_name: str, details: str, service: str, endpoint: str) -> CliError:
    """Turn a gRPC status (by code name, e.g. "UNAVAILABLE") into a one- or two-line CliError.

    Kept free of grpc types so it is unit-testable and cheap; ``client.py`` passes
    ``err.code().name`` and ``err.details()``.
    """
    details = (details or "").strip()
    if code_name == "UNAVAILABLE":
        return CliError(
            f"cannot reach the {service} at {endpoint}: is it running? (sky local up)",
            EXIT_UNREACHABLE,
        )
    if code_name == "DEADLINE_EXCEEDED":
        return CliError(
            f"the {service} at {endpoint} did not answer in time; it may be overloaded or stuck",
            EXIT_UNREACHABLE,
        )
    if code_name == "UNAUTHENTICATED":
        return CliError(
            f"the {service} at {endpoint} rejected the token: set STYX_TOKEN (or 'token:' in "
            "$STYX_HOME/config.yaml) to the control plane's token",
        )
    if code_name == "PERMISSION_DENIED":
        return CliError(f"permission denied by the {service}: {details}")
    if code_name in (
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "FAILED_PRECONDITION",
        "ALREADY_EXISTS",
        "RESOURCE_EXHAUSTED",
        "OUT_OF_RANGE",
        "ABORTED",
    ):
        return CliError(details or code_name.lower().replace("_", " "))
    if code_name == "UNIMPLEMENTED":
        return CliError(f"the {service} at {endpoint} does not support this call (version mismatch?)")
    return CliError(f"the {service} failed ({code_name}): {details or 'no details'}")
