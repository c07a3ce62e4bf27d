"""Hub tokens: random, shown once, stored as a SHA-256 hash, compared in constant time.

Roles, from least to most: ``agent`` (push as its own agent id, read its own commands),
``viewer`` (read everything), ``operator`` (read, and send commands to agents), ``admin``
(all that, and manage tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ROLES = ("agent", "viewer", "operator", "admin")
#: Roles allowed to read the facility (agents only read their own commands).
READERS = ("viewer", "operator", "admin")
OPERATORS = ("operator", "admin")
#: Seconds a running hub remembers a verified token (``HubSettings.token_cache_seconds``):
#: the bound on how long a token revoked from another process (the CLI) still works there.
TOKEN_CACHE_SECONDS = 5.0


def new_token() -> str:
    """A fresh token (256 random bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored in place of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def matches(token: str, stored_hash: str) -> bool:
    """Whether ``token`` hashes to ``stored_hash`` (constant-time comparison)."""
    return hmac.compare_digest(hash_token(token), stored_hash)


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else ValueError naming them."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return role


__all__ = ["ROLES", "READERS", "OPERATORS", "TOKEN_CACHE_SECONDS", "new_token", "hash_token",
           "matches", "check_role"]
