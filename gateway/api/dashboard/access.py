"""Who may see the dashboard, and who may press its rollback button.

With ``admin_key`` the page needs the key: as ``Authorization: Bearer KEY``, or, for a browser,
once through the sign-in form or ``/dashboard?key=KEY``, which start a session. A session is a
random token (never derived from the key), in an HttpOnly, SameSite=Strict cookie; the gateway
keeps it in memory for 12 hours at most, and signing out revokes it there, so a copied cookie
stops working too. Sessions belong to one gateway process: a restart signs everyone out, and
replicas behind a load balancer need sticky sessions (or the bearer key).

Without ``admin_key`` the page is read-only, and open only on a gateway with no ``api_keys``
(a gateway that asks clients for keys does not show its tasks, spend and agreement to anyone
who asks; set ``admin_key`` to see it). All key comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from litestar import Request
from litestar.datastructures import Cookie

from understudy.gateway.api import auth
from understudy.gateway.config import GatewayConfig

COOKIE = "understudy_dashboard"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000  # beyond it, the oldest session ends


@dataclass(frozen=True)
class Access:
    allowed: bool
    admin: bool
    closed: bool = False
    """The page is closed whatever the caller sends: keys are set and ``admin_key`` is not."""


class Sessions:
    """Dashboard sessions: random tokens, kept (as their hash) with their expiry."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.time):
        self.ttl_s = ttl_s
        self.clock = clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self) -> str:
        """A new session's token (the cookie's value)."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._expiry = {h: t for h, t in self._expiry.items() if t > now}
            while len(self._expiry) >= MAX_SESSIONS:
                del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
            self._expiry[_digest(token)] = now + self.ttl_s
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._expiry.get(_digest(token))
        return expiry is not None and expiry > self.clock()

    def end(self, token: str | None) -> None:
        """Revoke a session (sign-out)."""
        if token:
            with self._lock:
                self._expiry.pop(_digest(token), None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def access(request: Request, settings: GatewayConfig, sessions: Sessions) -> Access:
    """What the caller may do, given the configured keys."""
    key = settings.admin_key
    if not key:
        if settings.api_keys:
            return Access(allowed=False, admin=False, closed=True)
        return Access(allowed=True, admin=False)
    if auth.matches(auth.bearer(request.headers.get("authorization")), [key]):
        return Access(allowed=True, admin=True)
    if sessions.valid(request.cookies.get(COOKIE)):
        return Access(allowed=True, admin=True)
    return Access(allowed=False, admin=False)


def key_matches(key: str | None, presented: str | None) -> bool:
    return bool(key) and auth.matches(presented, [key or ""])


def session_cookie(request: Request, token: str | None) -> Cookie:
    """The cookie holding ``token``; None clears it."""
    https = (
        request.url.scheme == "https"
        or request.headers.get("x-forwarded-proto", "").lower() == "https"
    )
    return Cookie(
        key=COOKIE,
        value=token or "",
        path="/dashboard",
        max_age=SESSION_TTL_S if token else 0,
        httponly=True,
        samesite="strict",
        secure=https,
    )
