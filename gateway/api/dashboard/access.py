"""Who may see the dashboard, and who may press its rollback button.

With ``admin_key`` the page needs the key: as ``Authorization: Bearer KEY``, or, for a browser,
once through the sign-in form or ``/dashboard?key=KEY``, which start a session. A session is a
random token (never derived from the key), in an HttpOnly, SameSite=Strict cookie; the gateway
keeps its hash in the database for 12 hours at most, and signing out revokes it there, so a
copied cookie stops working too. Every worker process (``serve --workers N``) and every gateway
on the same database shares the sessions, and a restart keeps them.

Without ``admin_key`` the page is read-only, and open only on a gateway with no ``api_keys``
(a gateway that asks clients for keys does not show its tasks, spend and agreement to anyone
who asks; set ``admin_key`` to see it). All key comparisons are constant-time.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request
from litestar.datastructures import Cookie

from understudy.gateway.api import auth
from understudy.gateway.api.sessions import SESSION_TTL_S, Sessions
from understudy.gateway.config import GatewayConfig

COOKIE = "understudy_dashboard"


@dataclass(frozen=True)
class Access:
    allowed: bool
    admin: bool
    closed: bool = False
    """The page is closed whatever the caller sends: keys are set and ``admin_key`` is not."""


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
