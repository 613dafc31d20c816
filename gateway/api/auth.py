"""Gateway keys. Compared in constant time; only a short hash of a key is ever recorded."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from understudy.gateway.errors import AuthenticationError

KEY_HEADER = "x-understudy-api-key"


def key_id(key: str) -> str:
    """A stable, non-secret identifier for a key (for per-key accounting)."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:10]


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def matches(presented: str | None, keys: Sequence[str]) -> bool:
    if presented is None:
        return False
    found = False
    for key in keys:  # every key is compared, so timing does not tell which one matched
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


def authenticate(
    keys: Sequence[str], authorization: str | None, key_header: str | None, pass_through: bool
) -> str | None:
    """Check the gateway key; return its id (None when the gateway has no keys).

    In pass-through mode the ``Authorization`` header belongs to the teacher, so the gateway
    key travels in ``X-Understudy-Api-Key`` instead; without gateway keys, a bearer token must
    still be there (the teacher judges it: :mod:`gateway.serving.teacher_keys`).
    """
    if not keys:
        if pass_through and bearer(authorization) is None:
            # No gateway keys: the caller's own teacher key is the credential; none, no answer
            # (the student would otherwise answer a caller the teacher never saw).
            raise AuthenticationError(
                "You didn't provide an API key. Send your key as a bearer token."
            )
        return None
    presented = key_header if pass_through else bearer(authorization)
    if presented is None:
        where = "an X-Understudy-Api-Key header" if pass_through else "a bearer token"
        raise AuthenticationError(f"You didn't provide an API key. Send it as {where}.")
    if not matches(presented, keys):
        raise AuthenticationError("Incorrect API key provided.")
    return key_id(presented)
