"""Dashboard paths: the page, sign-in / sign-out, and the rollback button's endpoint."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import parse_qs

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect

from understudy.gateway.api.admin import checked_task
from understudy.gateway.api.dashboard.access import COOKIE, access, key_matches, session_cookie
from understudy.gateway.api.dashboard.data import gather
from understudy.gateway.api.dashboard.page import WINDOWS, render_closed, render_login, render_page
from understudy.gateway.api.failed_auth import client_address
from understudy.gateway.api.responses import json_response
from understudy.gateway.api.services import Services
from understudy.gateway.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from understudy.gateway.serving.pool import StudentPool
from understudy.storage.database import Store
from understudy.storage.registry import RegistryError, TaskState, rollback

DASHBOARD_HEADER = "x-understudy-dashboard"  # sent by the page's script; a form cannot forge it


def _csp(nonce: str) -> str:
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def _html(content: str, status: int = 200, nonce: str = "") -> Response:
    return Response(
        content=content,
        status_code=status,
        media_type="text/html",  # Litestar adds "; charset=utf-8" to a text/ type
        headers={
            "content-security-policy": _csp(nonce or secrets.token_urlsafe(8)),
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        },
    )


@get("/dashboard")
async def dashboard(request: Request, services: NamedDependency[Services]) -> Response:
    settings = services.settings
    window = request.query_params.get("window", "7d")
    window_s = dict(WINDOWS).get(window)
    if window_s is None:
        window, window_s = "7d", dict(WINDOWS)["7d"]
    presented = request.query_params.get("key")
    if presented is not None:  # a bookmarked link: trade the key for a cookie, drop it from the URL
        return _sign_in(request, services, presented, f"/dashboard?window={window}")
    who = access(request, settings, services.sessions)
    if who.closed:
        return _html(render_closed(), 403)
    if not who.allowed:
        return _html(render_login(), 401)
    data = await services.reads.run(gather, services.store, settings, window_s)
    nonce = secrets.token_urlsafe(16)
    return _html(render_page(data, window=window, admin=who.admin, nonce=nonce), nonce=nonce)


@post("/dashboard/login", status_code=303)
async def dashboard_login(request: Request, services: NamedDependency[Services]) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    presented = next(iter(form.get("key") or []), None)
    return _sign_in(request, services, presented, "/dashboard")


def _sign_in(request: Request, services: Services, presented: str | None, to: str) -> Response:
    """A new session for the admin key, or the sign-in form again (a failure is counted
    against the address, like any failed key check)."""
    address = client_address(request)
    services.failed_auth.check(address)
    if not key_matches(services.settings.admin_key, presented):
        services.failed_auth.failed(address, request.url.path)
        return _html(render_login("That key is not the admin key."), 401)
    redirect = Redirect(to, status_code=303)
    redirect.set_cookie(session_cookie(request, services.sessions.start()))
    return redirect


@post("/dashboard/logout", status_code=303)
async def dashboard_logout(request: Request, services: NamedDependency[Services]) -> Response:
    """Sign out: the session ends on the gateway too, not only in this browser."""
    services.sessions.end(request.cookies.get(COOKIE))
    redirect = Redirect("/dashboard", status_code=303)
    redirect.set_cookie(session_cookie(request, None))
    return redirect


@post("/dashboard/rollback/{task:str}", status_code=200)
async def dashboard_rollback(
    request: Request,
    task: FromPath[str],
    services: NamedDependency[Services],
    pool: NamedDependency[StudentPool],
) -> Response:
    settings = services.settings
    who = access(request, settings, services.sessions)
    if not settings.admin_key:
        raise PermissionDeniedError("Rollback is disabled: set admin_key to enable it.")
    if not who.admin:
        raise AuthenticationError("Sign in to the dashboard with the admin key first.")
    if request.headers.get(DASHBOARD_HEADER) != "1":
        raise PermissionDeniedError(f"Missing the {DASHBOARD_HEADER} header.")
    state = await asyncio.to_thread(_rollback, services.store, checked_task(task))
    await pool.refresh_now()
    body = {"task": state.task, "champion": state.champion_id, "previous": state.previous_id}
    return json_response(msgspec.json.encode(body), 200, request)


def _rollback(store: Store, task: str) -> TaskState:
    try:
        with store.write() as db:
            return rollback(db, task, reason="dashboard")
    except RegistryError as exc:
        raise NotFoundError(str(exc)) from None


DASHBOARD_HANDLERS = [dashboard, dashboard_login, dashboard_logout, dashboard_rollback]
