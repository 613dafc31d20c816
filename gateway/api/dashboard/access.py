"""Who may see the dashboard, and who may press its rollback button.

Without ``admin_key`` the page is open and read-only (admin actions are disabled, as for the
admin API). With it, the page needs the key: as ``Authorization: Bearer KEY``, or, for a
browser, once through the sign-in form or ``/dashboard?key=KEY``, which set an HttpOnly,
SameSite=Strict cookie holding an HMAC of the key (never the key itself). All comparisons are
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from litestar import Request
from litestar.datastructures import Cookie

from understudy.gateway.api import auth

COOKIE = "understudy_dashboard"
COOKIE_MAX_AGE_S = 12 * 3600


@dataclass(frozen=True)
class Access:
    allowed: bool
    admin: bool


def session_token(admin_key: str) -> str:
    return hmac.new(
        admin_key.encode(), b"understudy-dashboard-session-v1", hashlib.sha256
    ).hexdigest()


def access(request: Request, key: str | None) -> Access:
    """What the caller may do, given the configured admin ``key``."""
    if not key:
        return Access(allowed=True, admin=False)
    if auth.matches(auth.bearer(request.headers.get("authorization")), [key]):
        return Access(allowed=True, admin=True)
    cookie = request.cookies.get(COOKIE)
    if cookie is not None and hmac.compare_digest(cookie.encode(), session_token(key).encode()):
        return Access(allowed=True, admin=True)
    return Access(allowed=False, admin=False)


def key_matches(key: str | None, presented: str | None) -> bool:
    return bool(key) and auth.matches(presented, [key or ""])


def session_cookie(request: Request, key: str | None, *, clear: bool = False) -> Cookie:
    key = key or ""
    https = (
        request.url.scheme == "https"
        or request.headers.get("x-forwarded-proto", "").lower() == "https"
    )
    return Cookie(
        key=COOKIE,
        value="" if clear else session_token(key),
        path="/dashboard",
        max_age=0 if clear else COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=https,
    )
