"""Bearer tokens: the control plane's shared token and node-scoped tokens derived from it.

A node token lets one node's agent call the control plane without handing the shared
token to a cloud VM's user-data. It names the node and an expiry and is signed with
HMAC-SHA256 keyed by the shared token, so any service holding the shared token can
check it and rotating the shared token revokes every node token at once.
Format: ``styx-node.<node_id>.<expiry unix seconds>.<hex signature>``.
"""

from __future__ import annotations

import hashlib
import hmac
import time

_PREFIX = "styx-node"
DEFAULT_NODE_TOKEN_TTL_S = 30 * 24 * 3600.0


def _sign(secret: str, node_id: str, expiry: int) -> str:
    message = f"{_PREFIX}.{node_id}.{expiry}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def mint_node_token(secret: str, node_id: str, ttl_s: float = DEFAULT_NODE_TOKEN_TTL_S) -> str:
    """A token for ``node_id``'s agent, valid for ``ttl_s`` seconds."""
    if not secret:
        return ""
    # Whole days: a create retried with the same idempotency key (EC2 ClientToken) then
    # carries the same boot script, which the cloud requires for the retry to match.
    expiry = int((time.time() + ttl_s) // 86400 * 86400)
    return f"{_PREFIX}.{node_id}.{expiry}.{_sign(secret, node_id, expiry)}"


def node_of_token(secret: str, token: str, at: float | None = None) -> str | None:
    """The node id a valid, unexpired node token was minted for; None otherwise."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _PREFIX or not secret:
        return None
    _, node_id, expiry_text, signature = parts
    if not expiry_text.isdigit():
        return None
    expiry = int(expiry_text)
    if not hmac.compare_digest(signature, _sign(secret, node_id, expiry)):
        return None
    if expiry < (time.time() if at is None else at):
        return None
    return node_id


# What a node token may call: the agent's side of the control plane, nothing a user does.
AGENT_METHODS = (
    "/styx.v1.AgentGateway/",
    "/styx.v1.ResourceBroker/RegisterNode",
    "/styx.v1.ResourceBroker/Heartbeat",
    "/styx.v1.ResourceBroker/DeregisterNode",
)


def token_accepted(secret: str, presented: str, method: str) -> bool:
    """True when ``presented`` is the shared token, or a valid node token calling an agent RPC."""
    if hmac.compare_digest(presented.encode(), secret.encode()):
        return True
    return method.startswith(AGENT_METHODS) and node_of_token(secret, presented) is not None
