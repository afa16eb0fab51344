"""AIP-158 pagination for List RPCs whose results are small, ordered, in-memory lists.

A page token is opaque to clients: it names the last item of the previous page (by the
list's sort key, so items added or removed meanwhile neither repeat nor vanish from the
pages still to come) and a digest of the request's other fields, so a token is refused
with a request it was not made for (AIP-158: "the other fields must match").
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from styx.common.errors import InvalidArgument

T = TypeVar("T")

#: The largest page_size a List RPC accepts (the proto's rule says the same).
MAX_PAGE_SIZE = 10000


def request_scope(request: Any) -> str:
    """A short digest of ``request`` without its paging fields."""
    other = type(request)()
    other.CopyFrom(request)
    other.ClearField("page_size")
    other.ClearField("page_token")
    return hashlib.sha256(other.SerializeToString(deterministic=True)).hexdigest()[:16]


def page(items: Sequence[T], request: Any, key: Callable[[T], str]) -> tuple[list[T], str]:
    """The page of ``items`` (any order; sorted here by ``key``, which must be unique) that
    ``request.page_size`` / ``request.page_token`` ask for, and the next page's token ("" at
    the end). ``page_size`` 0 means everything after the token."""
    size = int(request.page_size)
    if size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size: at most {MAX_PAGE_SIZE}, got {size}")
    scope = request_scope(request)
    ordered = sorted(items, key=key)
    keys = [key(i) for i in ordered]
    start = 0
    if request.page_token:
        start = bisect.bisect_right(keys, _decode(request.page_token, scope))
    rest = ordered[start:]
    if size == 0 or len(rest) <= size:
        return rest, ""
    return rest[:size], _encode(scope, keys[start + size - 1])


def _encode(scope: str, last: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([scope, last]).encode()).decode().rstrip("=")


def _decode(token: str, scope: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        token_scope, last = json.loads(raw)
        if not isinstance(token_scope, str) or not isinstance(last, str):
            raise ValueError(token)
    except (ValueError, TypeError):
        raise InvalidArgument(
            "page_token: not a token this RPC returned; pass next_page_token as given, or ''"
        ) from None
    if token_scope != scope:
        raise InvalidArgument(
            "page_token: made for a request with other filters; repeat those filters, or start again without a token"
        )
    return last
