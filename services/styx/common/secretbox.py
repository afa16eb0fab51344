"""Secret values of tasks (a task's ``secrets:``): encrypted at rest, redacted in output.

The scheduler seals each secret value with Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package) before it is stored, and opens it only to hand it to the agent
that runs the task. The key comes from ``STYX_SECRET_KEY`` (a Fernet key: 32 url-safe
base64 bytes; give every replica the same one), or else from a key file that is created
on first use with mode 0600 (``$STYX_HOME/local/secret.key`` by default). Responses show
every secret as ``REDACTED``.

``cryptography`` is imported on first use, so modules that only need ``REDACTED`` (the
request validator) stay cheap to import.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

REDACTED = "<redacted>"
KEY_ENV = "STYX_SECRET_KEY"


class SecretKeyError(Exception):
    """The secret key is malformed or cannot be read or created; the message says how to fix it."""


class SecretOpenError(Exception):
    """A stored secret cannot be decrypted (the scheduler's key changed since it was sealed)."""


def default_key_file() -> Path:
    """Where the local scheduler keeps its key: ``$STYX_HOME/local/secret.key``."""
    from styx.common.config import styx_home

    return styx_home() / "local" / "secret.key"


def redacted(secrets: Mapping[str, str]) -> dict[str, str]:
    """The secrets as every output shows them: the keys, each with ``REDACTED``."""
    return dict.fromkeys(secrets, REDACTED)


class SecretBox:
    """Seals and opens secret values with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        from cryptography.fernet import Fernet

        self._key = key
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SecretKeyError(
                "the secret key is not a Fernet key (32 url-safe base64-encoded bytes); create one with "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None

    @classmethod
    def from_env_or_file(cls, key_file: Path | None = None) -> SecretBox:
        """The box of ``STYX_SECRET_KEY`` when set, else of ``key_file`` (created 0600 with
        a new random key when missing; default ``default_key_file()``)."""
        text = os.environ.get(KEY_ENV, "").strip()
        if text:
            return cls(text.encode())
        return cls(_read_or_create_key(key_file or default_key_file()))

    def derive(self, purpose: bytes) -> bytes:
        """A key for another use (HMAC-SHA256 of ``purpose`` under this key), e.g. the
        request-digest key of the scheduler's request log."""
        return hmac.new(self._key, purpose, hashlib.sha256).digest()

    def seal(self, values: Mapping[str, str]) -> dict[str, str]:
        """Each value encrypted (a Fernet token as text); keys are kept as they are."""
        return {k: self._fernet.encrypt(v.encode()).decode() for k, v in values.items()}

    def open(self, sealed: Mapping[str, str]) -> dict[str, str]:
        """Inverse of ``seal``; SecretOpenError when a value was sealed with another key."""
        from cryptography.fernet import InvalidToken

        try:
            return {k: self._fernet.decrypt(v.encode()).decode() for k, v in sealed.items()}
        except InvalidToken:
            raise SecretOpenError(
                f"the task's secrets cannot be decrypted: the scheduler's secret key ({KEY_ENV} or its key "
                "file) changed since they were stored; submit the task again"
            ) from None


def _read_or_create_key(path: Path) -> bytes:
    from cryptography.fernet import Fernet

    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc.strerror}; set {KEY_ENV}") from None
    key = Fernet.generate_key()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written whole to a private temporary file, then linked into place: when two
        # schedulers start at once, one key wins and the other reads it complete.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret-key-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key + b"\n")
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except FileExistsError:
        return path.read_bytes().strip()
    except OSError as exc:
        raise SecretKeyError(f"cannot create the secret key file {path}: {exc.strerror}; set {KEY_ENV}") from None
    return key
