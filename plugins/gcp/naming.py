"""Names, labels, ids and idempotency keys of Styx's GCE instances (pure functions).

GCE rules (documented at cloud.google.com/compute/docs/labeling-resources and
.../naming-resources):
- instance names: ``[a-z]([-a-z0-9]{0,61}[a-z0-9])?`` (1-63 characters);
- label keys: 1-63 characters of lowercase letters, digits, ``_`` and ``-``, starting with a
  lowercase letter; values: 0-63 characters of the same set; at most 64 labels.

Values that break these rules are mapped deterministically (lowercased, other characters
to ``_``), and when that loses information or length, to a readable prefix plus a hash, so
the same input always yields the same label and lookups by label stay exact in practice.
The exact node id and request id are also kept in the instance's metadata.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace

from styx.provider import TAG_MANAGED, TAG_NODE, TAG_REQUEST, TagRules, TextRule, digest, instance_tags

LABEL_NODE_ID = TAG_NODE
LABEL_REQUEST_ID = TAG_REQUEST
LABEL_MANAGED = TAG_MANAGED
#: Metadata keys holding the exact ids (labels may be hashed).
META_NODE_ID = "styx-node-id"
META_REQUEST_ID = "styx-request-id"
META_STARTUP = "startup-script"
MAX_LABELS = 64

# Namespace of the requestIds Styx sends: uuid5(namespace, "<operation>:<styx request id>").
_REQUEST_NAMESPACE = uuid.UUID("5d3c1f8e-2a4b-5c6d-9e0f-1a2b3c4d5e6f")
_NAME_OK = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
#: GCE label rules: a valid key or value is kept; another is lower-cased and cleaned, a
#: value then gets a hash of the original (so distinct values stay distinct), a key only
#: when it is too long ("styx.dev/cluster" -> "styx_dev_cluster").
_GCE_VALUE = TextRule(
    63, valid=r"[a-z0-9_-]{0,63}", invalid=r"[^a-z0-9_-]+", lowercase=True, hash_changed="-h", keep=40
)
# A key must start with a letter ("l_" is put in front otherwise) and is hashed only when long.
_GCE_KEY = replace(_GCE_VALUE, valid=r"[a-z][a-z0-9_-]{0,62}", strip="_", first="[a-z]", first_prefix="l_")
GCE_LABELS = TagRules(
    key=replace(_GCE_KEY, hash_changed="", hash_long="-", keep=50, digest_len=8), value=_GCE_VALUE, max_tags=MAX_LABELS
)


def request_uuid(operation: str, request_id: str) -> str:
    """The GCE ``requestId`` for a Styx request: a UUID derived from it (GCE wants a UUID)."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, f"{operation}:{request_id}"))


def instance_name(node_id: str) -> str:
    """The instance name for a node: ``styx-<node id>``, hashed when the id breaks GCE's rules.

    Deterministic, so a second insert for the same node collides (409) instead of creating
    a twin, a second line of defence behind requestId and the label lookup.
    """
    plain = f"styx-{node_id}"
    if _NAME_OK.match(plain):
        return plain
    cleaned = re.sub(r"[^a-z0-9-]+", "-", node_id.lower()).strip("-")[:46].rstrip("-")
    return f"styx-{cleaned}-{digest(node_id)}" if cleaned else f"styx-{digest(node_id)}"


def label_value(value: str) -> str:
    """A label value for ``value``: itself when allowed, else a cleaned prefix plus a hash."""
    return GCE_LABELS.value.apply(value)


def label_key(key: str) -> str:
    """A label key for ``key`` ("styx.dev/cluster" -> "styx_dev_cluster")."""
    return GCE_LABELS.key.apply(key)


def instance_labels(node_id: str, request_id: str, extra: dict[str, str]) -> dict[str, str]:
    """The labels of a new instance: Styx's own three plus ``extra``, all made valid.

    Styx's keys win over user labels of the same (cleaned) name; labels beyond GCE's limit
    of 64 are dropped in key order (they stay visible in the Styx store).
    """
    return instance_tags(node_id, request_id, extra, GCE_LABELS)


def instance_id(zone: str, name: str) -> str:
    """Styx's id for an instance: ``<zone>/<name>`` (GCE names are unique per zone)."""
    return f"{zone}/{name}"


def parse_instance_id(value: str) -> tuple[str, str] | None:
    """``(zone, name)`` of an id made by ``instance_id``; None when malformed."""
    zone, sep, name = value.partition("/")
    if not sep or not zone or not _NAME_OK.match(name) or not re.match(r"^[a-z]+-[a-z0-9]+-[a-z]$", zone):
        return None
    return zone, name


def zone_of(url_or_name: str) -> str:
    """The zone name from a GCE zone URL (".../zones/us-central1-a") or a plain name."""
    return url_or_name.rstrip("/").rsplit("/", 1)[-1]
