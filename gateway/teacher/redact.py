"""Known secrets taken out of whatever the teacher says before it is stored or relayed.

A teacher (or a proxy in front of it) may echo the request's ``Authorization`` in its error
text. The secrets the gateway knows, the teacher key, the gateway keys, the admin key and the
key the client sent with the request, are replaced by :data:`REDACTED` wherever they appear.
Values shorter than :data:`MIN_SECRET` characters are not treated as secrets (replacing every
``x`` of a text would destroy it, and protects nothing).
"""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_SECRET = 8


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization`` header value (``Bearer KEY`` -> ``KEY``)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if token else scheme


class Redactor:
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._known = _longest_first(secrets)

    def _all(self, authorization: str | None) -> tuple[str, ...]:
        token = bearer_token(authorization)
        if token is None or len(token) < MIN_SECRET or token in self._known:
            return self._known
        return _longest_first((*self._known, token))

    def bytes(self, data: bytes, authorization: str | None = None) -> bytes:
        for secret in self._all(authorization):
            encoded = secret.encode()
            if encoded in data:
                data = data.replace(encoded, REDACTED.encode())
        return data

    def text(self, data: str, authorization: str | None = None) -> str:
        for secret in self._all(authorization):
            if secret in data:
                data = data.replace(secret, REDACTED)
        return data


def _longest_first(secrets: Iterable[str | None]) -> tuple[str, ...]:
    kept = {s for s in secrets if s and len(s) >= MIN_SECRET}
    return tuple(sorted(kept, key=len, reverse=True))
