"""Styx's tag set and the per-cloud rules that make labels valid tags.

Every instance carries the same Styx tags: ``styx-managed=true``, ``styx-node-id``,
``styx-request-id`` (and the ``styx-plane`` label the provisioner passes). Each cloud has
its own rules for tag keys and values (characters, lengths, reserved prefixes, count);
a provider describes them once as ``TagRules`` and calls ``instance_tags``. Cleaning is
deterministic, so a lookup by the request-id tag finds what an earlier create wrote.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from styx.provider.types import PLANE_LABEL

log = logging.getLogger(__name__)

TAG_MANAGED = "styx-managed"
TAG_NODE = "styx-node-id"
TAG_REQUEST = "styx-request-id"
#: The tags Styx sets itself; a user label never overrides them.
STYX_TAGS = frozenset({TAG_MANAGED, TAG_NODE, TAG_REQUEST})

__all__ = [
    "PLANE_LABEL",
    "STYX_TAGS",
    "TAG_MANAGED",
    "TAG_NODE",
    "TAG_REQUEST",
    "TagRules",
    "TextRule",
    "digest",
    "instance_tags",
    "user_tags",
]


def digest(text: str, size: int = 10) -> str:
    """A short, stable hex digest of ``text`` (keeps cleaned names of distinct inputs apart)."""
    return hashlib.sha256(text.encode()).hexdigest()[:size]


@dataclass(frozen=True)
class TextRule:
    """How one tag key or value is made valid for a cloud.

    In order: text matching ``valid`` is kept as it is; otherwise it is lower-cased (when
    ``lowercase``), runs matching ``invalid`` become ``replacement``, ``strip`` characters
    are stripped, a first character not matching ``first`` gets ``first_prefix``. Then
    ``hash_changed`` (a separator) cuts the text to ``keep`` characters and appends a
    digest; otherwise text longer than ``max_len`` is cut, with ``hash_long`` (a separator)
    to ``keep`` characters plus a digest, else plainly to ``max_len``.
    """

    max_len: int
    invalid: str = ""
    replacement: str = "_"
    lowercase: bool = False
    valid: str = ""
    strip: str = ""
    first: str = ""
    first_prefix: str = ""
    hash_changed: str = ""
    hash_long: str = ""
    keep: int = 0
    digest_len: int = 10

    def apply(self, text: str) -> str:
        """``text`` made valid under this rule."""
        if self.valid and re.fullmatch(self.valid, text):
            return text
        cleaned = text.lower() if self.lowercase else text
        if self.invalid:
            cleaned = re.sub(self.invalid, self.replacement, cleaned)
        if self.strip:
            cleaned = cleaned.strip(self.strip)
        if self.first and not re.match(self.first, cleaned):
            cleaned = f"{self.first_prefix}{cleaned}"
        if self.hash_changed:
            return f"{cleaned[: self.keep]}{self.hash_changed}{digest(text, self.digest_len)}"
        if len(cleaned) <= self.max_len:
            return cleaned
        if self.hash_long:
            return f"{cleaned[: self.keep]}{self.hash_long}{digest(text, self.digest_len)}"
        return cleaned[: self.max_len]


@dataclass(frozen=True)
class TagRules:
    """A cloud's tag rules: one ``TextRule`` for keys and one for values, plus limits."""

    key: TextRule
    value: TextRule
    #: Most tags on one resource, Styx's own included (0: no limit).
    max_tags: int = 0
    #: Key prefixes the cloud reserves (compared case-insensitively), e.g. "aws:".
    reserved_prefixes: tuple[str, ...] = ()
    #: Put in front of a key with a reserved prefix; "" drops such a label instead.
    rename_reserved: str = ""
    #: Keys besides Styx's own that a label may not take (e.g. EC2's "Name").
    reserved_keys: frozenset[str] = field(default_factory=frozenset)

    def own_count(self) -> int:
        """How many tags Styx sets itself under these rules."""
        return len(STYX_TAGS | self.reserved_keys)


def user_tags(labels: Mapping[str, str], rules: TagRules) -> dict[str, str]:
    """``labels`` as valid tags, in key order: reserved or Styx-owned keys are dropped (or
    renamed, per ``rules``), and labels beyond the cloud's limit are left out (they stay
    visible in the Styx store)."""
    out: dict[str, str] = {}
    for key, value in sorted(labels.items()):
        name = rules.key.apply(str(key))
        if rules.reserved_prefixes and name.lower().startswith(rules.reserved_prefixes):
            if not rules.rename_reserved:
                log.warning("label %r uses a reserved prefix; not tagged", key)
                continue
            name = rules.key.apply(f"{rules.rename_reserved}{name}")
        if not name or name in STYX_TAGS or name in rules.reserved_keys:
            log.warning("label %r cannot be a tag; skipped", key)
            continue
        out[name] = rules.value.apply(str(value))
    room = rules.max_tags - rules.own_count() if rules.max_tags else len(out)
    if len(out) > room:
        log.warning("more than %d labels; the rest are not tagged", room)
        out = dict(list(out.items())[: max(room, 0)])
    return out


def instance_tags(node_id: str, request_id: str, labels: Mapping[str, str], rules: TagRules) -> dict[str, str]:
    """The tags of a new instance: Styx's own (which win) plus ``labels``, all made valid."""
    own = {
        TAG_MANAGED: "true",
        TAG_NODE: rules.value.apply(node_id),
        TAG_REQUEST: rules.value.apply(request_id),
    }
    return {**own, **user_tags(labels, rules)}
