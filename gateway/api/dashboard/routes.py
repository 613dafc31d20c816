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
from understudy.gateway.api.dashboard.access import access, key_matches, session_cookie
from understudy.gateway.api.dashboard.data import gather
from understudy.gateway.api.dashboard.page import WINDOWS, render_login, render_page
from understudy.gateway.api.responses import json_response
from understudy.gateway.api.services import Config
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
        media_type="text/html; charset=utf-8",
        headers={
            "content-security-policy": _csp(nonce or secrets.token_urlsafe(8)),
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        },
    )


@get("/dashboard")
async def dashboard(request: Request, settings: Config, store: NamedDependency[Store]) -> Response:
    key = settings.admin_key
    window = request.query_params.get("window", "7d")
    window_s = dict(WINDOWS).get(window)
    if window_s is None:
        window, window_s = "7d", dict(WINDOWS)["7d"]
    presented = request.query_params.get("key")
    if presented is not None:  # a bookmarked link: trade the key for a cookie, drop it from the URL
        if not key_matches(key, presented):
            return _html(render_login("That key is not the admin key."), 401)
        redirect = Redirect(f"/dashboard?window={window}", status_code=303)
        redirect.set_cookie(session_cookie(request, key))
        return redirect
    who = access(request, key)
    if not who.allowed:
        return _html(render_login(), 401)
    data = await asyncio.to_thread(gather, store, settings, window_s)
    nonce = secrets.token_urlsafe(16)
    return _html(render_page(data, window=window, admin=who.admin, nonce=nonce), nonce=nonce)


@post("/dashboard/login", status_code=303)
async def dashboard_login(request: Request, settings: Config) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    presented = next(iter(form.get("key") or []), None)
    if not key_matches(settings.admin_key, presented):
        return _html(render_login("That key is not the admin key."), 401)
    redirect = Redirect("/dashboard", status_code=303)
    redirect.set_cookie(session_cookie(request, settings.admin_key))
    return redirect


@post("/dashboard/logout", status_code=303)
async def dashboard_logout(request: Request, settings: Config) -> Response:
    redirect = Redirect("/dashboard", status_code=303)
    redirect.set_cookie(session_cookie(request, settings.admin_key, clear=True))
    return redirect


@post("/dashboard/rollback/{task:str}", status_code=200)
async def dashboard_rollback(
    request: Request,
    task: FromPath[str],
    settings: Config,
    store: NamedDependency[Store],
    pool: NamedDependency[StudentPool],
) -> Response:
    who = access(request, settings.admin_key)
    if not settings.admin_key:
        raise PermissionDeniedError("Rollback is disabled: set admin_key to enable it.")
    if not who.admin:
        raise AuthenticationError("Sign in to the dashboard with the admin key first.")
    if request.headers.get(DASHBOARD_HEADER) != "1":
        raise PermissionDeniedError(f"Missing the {DASHBOARD_HEADER} header.")
    state = await asyncio.to_thread(_rollback, store, checked_task(task))
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
