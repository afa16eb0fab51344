"""Bearer tokens: the control plane's shared token and node-scoped tokens derived from it.

Two kinds of token are derived from the shared token, both signed with HMAC-SHA256 keyed
by it, so any service holding the shared token checks them without a lookup, and
rotating the shared token revokes all of them at once:

- A **join token** (``styx-join.<node_id>.<expiry>.<sig>``) goes into a cloud VM's boot
  script. It opens one RPC, ``ResourceBroker/JoinNode``, for its own node, and the broker
  redeems it once: boot scripts stay readable on the VM (the metadata service, the
  cloud console), so a copy read later must be worthless.
- A **node token** (``styx-node.<node_id>.<expiry>.<sig>``) is what JoinNode hands back,
  and what local agents get directly. It opens the agents' RPCs only, and only for its
  own node: a request naming another node is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

_NODE = "styx-node"
_JOIN = "styx-join"
DEFAULT_NODE_TOKEN_TTL_S = 365 * 24 * 3600.0
# A VM boots within minutes of its create call; two days leave room for a slow image and
# still let a create retried the next day (same idempotency key) carry the same script.
DEFAULT_JOIN_TOKEN_TTL_S = 2 * 24 * 3600.0

# What a node token may call: the agent's side of the control plane, nothing a user does.
AGENT_METHODS = (
    "/styx.v1.AgentGateway/",
    "/styx.v1.ResourceBroker/RegisterNode",
    "/styx.v1.ResourceBroker/Heartbeat",
    "/styx.v1.ResourceBroker/DeregisterNode",
)
JOIN_METHOD = "/styx.v1.ResourceBroker/JoinNode"


@dataclass(frozen=True)
class Caller:
    """Who presented a token: the shared token's holder (``node_id`` empty) or one node."""

    kind: str  # "shared" | "node" | "join"
    node_id: str = ""


def _sign(secret: str, prefix: str, node_id: str, expiry: int) -> str:
    message = f"{prefix}.{node_id}.{expiry}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _mint(secret: str, prefix: str, node_id: str, ttl_s: float) -> str:
    if not secret:
        return ""
    # Whole days: a create retried with the same idempotency key (EC2 ClientToken) then
    # carries the same boot script, which the cloud requires for the retry to match.
    expiry = int((time.time() + ttl_s) // 86400 * 86400)
    return f"{prefix}.{node_id}.{expiry}.{_sign(secret, prefix, node_id, expiry)}"


def _verify(secret: str, prefix: str, token: str, at: float | None) -> str | None:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != prefix or not secret:
        return None
    _, node_id, expiry_text, signature = parts
    if not expiry_text.isdigit():
        return None
    expiry = int(expiry_text)
    if not hmac.compare_digest(signature, _sign(secret, prefix, node_id, expiry)):
        return None
    if expiry < (time.time() if at is None else at):
        return None
    return node_id


def mint_node_token(secret: str, node_id: str, ttl_s: float = DEFAULT_NODE_TOKEN_TTL_S) -> str:
    """A token for ``node_id``'s agent, valid for ``ttl_s`` seconds (rounded down to a day)."""
    return _mint(secret, _NODE, node_id, ttl_s)


def mint_join_token(secret: str, node_id: str, ttl_s: float = DEFAULT_JOIN_TOKEN_TTL_S) -> str:
    """A token ``node_id``'s first boot trades, once, for a node token (JoinNode)."""
    return _mint(secret, _JOIN, node_id, ttl_s)


def node_of_token(secret: str, token: str, at: float | None = None) -> str | None:
    """The node id a valid, unexpired node token was minted for; None otherwise."""
    return _verify(secret, _NODE, token, at)


def node_of_join_token(secret: str, token: str, at: float | None = None) -> str | None:
    """The node id a valid, unexpired join token was minted for; None otherwise."""
    return _verify(secret, _JOIN, token, at)


def identify(secret: str, presented: str) -> Caller | None:
    """Who ``presented`` belongs to; None for a wrong, tampered or expired token."""
    if hmac.compare_digest(presented.encode(), secret.encode()):
        return Caller("shared")
    if node_id := node_of_token(secret, presented):
        return Caller("node", node_id)
    if node_id := node_of_join_token(secret, presented):
        return Caller("join", node_id)
    return None


def allowed(caller: Caller, method: str) -> bool:
    """True when ``caller`` may call ``method`` at all (which node it may name is checked per request)."""
    if caller.kind == "shared":
        return True
    if caller.kind == "node":
        return method.startswith(AGENT_METHODS)
    return method == JOIN_METHOD


def token_accepted(secret: str, presented: str, method: str) -> bool:
    """True when ``presented`` may call ``method``: the shared token anywhere, node tokens
    on the agents' RPCs, join tokens on JoinNode."""
    caller = identify(secret, presented)
    return caller is not None and allowed(caller, method)
