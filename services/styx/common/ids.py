"""Identifier helpers: short, prefixed, random ids (``t-1a2b3c4d5e6f``)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """Return ``<prefix>-<12 hex chars>``: 48 random bits, plenty for one control plane."""
    return f"{prefix}-{secrets.token_hex(6)}"
