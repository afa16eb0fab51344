"""Error classification: a cloud's error codes and HTTP statuses -> ``ProviderErrorKind``.

A provider lists its codes once in an ``ErrorCodes`` table and calls ``kind_of``; the
table is checked in the order capacity, quota, auth, invalid, then the HTTP status
(``kind_of_status``). Messages shown to users keep the cloud's code and text, clipped by
``clip``; an exception the provider does not know becomes INTERNAL with its type only
(``unexpected``), because its text may hold anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from styx.provider.types import ProviderError, ProviderErrorKind

#: Longest cloud message kept in a ProviderError.
MAX_MESSAGE = 300


@dataclass(frozen=True)
class ErrorCodes:
    """A cloud's error codes, by kind."""

    capacity: frozenset[str] = frozenset()
    quota: frozenset[str] = frozenset()
    auth: frozenset[str] = frozenset()
    invalid: frozenset[str] = frozenset()
    #: (regular expression on the code, kind), tried after the sets, e.g. ("Invalid.*", INVALID).
    patterns: tuple[tuple[str, ProviderErrorKind], ...] = ()
    #: (code, word in the message, kind): a generic code made specific by its message.
    message_words: tuple[tuple[str, str, ProviderErrorKind], ...] = ()
    #: Compare codes upper-cased (the sets must then hold upper-case codes).
    ignore_case: bool = False
    #: Kind of a code nothing matches when there is no HTTP status either.
    default: ProviderErrorKind = field(default=ProviderErrorKind.INTERNAL)

    def kind_of_codes(self, codes: Iterable[str], message: str = "") -> ProviderErrorKind | None:
        """The kind the first matching table gives ``codes``; None when none matches."""
        normal = [c.upper() if self.ignore_case else c for c in codes if c]
        for table, kind in (
            (self.capacity, ProviderErrorKind.CAPACITY),
            (self.quota, ProviderErrorKind.QUOTA),
            (self.auth, ProviderErrorKind.AUTH),
            (self.invalid, ProviderErrorKind.INVALID),
        ):
            if any(c in table for c in normal):
                return kind
        for pattern, kind in self.patterns:
            if any(re.fullmatch(pattern, c) for c in normal):
                return kind
        lowered = message.lower()
        for code, word, kind in self.message_words:
            if code in normal and word in lowered:
                return kind
        return None

    def kind_of(self, codes: Iterable[str], status: int | None = None, message: str = "") -> ProviderErrorKind:
        """The kind of an error with these codes and HTTP ``status`` (None: no HTTP status).

        A 401 or 403 is about permissions even when its code reads like a bad request.
        """
        kind = self.kind_of_codes(codes, message)
        if kind is None or (kind is ProviderErrorKind.INVALID and status in (401, 403)):
            return self.default if status is None else kind_of_status(status)
        return kind


def kind_of_status(status: int) -> ProviderErrorKind:
    """The kind of an HTTP status: 401/403 AUTH, 429 CAPACITY (try elsewhere), other 4xx
    INVALID, anything else INTERNAL."""
    if status in (401, 403):
        return ProviderErrorKind.AUTH
    if status == 429:
        return ProviderErrorKind.CAPACITY
    if 400 <= status < 500:
        return ProviderErrorKind.INVALID
    return ProviderErrorKind.INTERNAL


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, at most ``limit`` characters (an ellipsis marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unexpected(exc: BaseException, doing: str) -> ProviderError:
    """An INTERNAL error for an exception no classifier knows; its text is left out."""
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(ProviderErrorKind.INTERNAL, f"{doing}: unexpected {type(exc).__name__}")
