"""Admin endpoints: task modes and rollback. They need the admin key; client keys do not work."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from understudy.gateway.api import auth
from understudy.gateway.api.responses import json_response, new_request_id
from understudy.gateway.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    UnderstudyError,
    error_body,
)
from understudy.gateway.protocol import decode_body
from understudy.storage.database import open_database
from understudy.storage.registry import MODES, RegistryError, all_task_states, rollback, set_mode


def require_admin(request: Request) -> None:
    key = request.app.state.settings.admin_key
    if not key:
        raise PermissionDeniedError("Admin endpoints are disabled: set admin_key to enable them.")
    if not auth.matches(auth.bearer(request.headers.get("authorization")), [key]):
        raise auth.AuthenticationError("This endpoint needs the admin key as a bearer token.")


async def _admin(request: Request, action: Any) -> Response:
    request_id = new_request_id()
    try:
        require_admin(request)
        result = await action()
    except UnderstudyError as exc:
        return json_response(error_body(exc), exc.status_code, request_id)
    return json_response(msgspec.json.encode(result), 200, request_id)


def _in_db(request: Request, fn: Any) -> Any:
    db = open_database(request.app.state.settings.db_path, migrate_schema=False)
    try:
        return fn(db)
    except RegistryError as exc:
        raise NotFoundError(str(exc)) from None
    finally:
        db.conn.close()


def _state_dict(state: Any) -> dict[str, Any]:
    return {
        "task": state.task,
        "mode": state.mode,
        "champion": state.champion_id,
        "previous": state.previous_id,
        "updated_at": state.updated_at,
        "reason": state.reason,
    }


@get("/admin/tasks")
async def admin_tasks(request: Request) -> Response:
    async def action() -> Any:
        states = await asyncio.to_thread(_in_db, request, all_task_states)
        return {"data": [_state_dict(s) for s in states]}

    return await _admin(request, action)


@post("/admin/tasks/{task:str}/mode", status_code=200)
async def admin_set_mode(request: Request, task: str) -> Response:
    async def action() -> Any:
        body = decode_body(await request.body())
        mode = body.get("mode")
        if mode not in MODES:
            raise InvalidRequestError(f"'mode' must be one of {', '.join(MODES)}", param="mode")
        state = await asyncio.to_thread(
            _in_db, request, lambda db: set_mode(db, task, mode, reason="admin API")
        )
        await request.app.state.pool.refresh_now()
        return _state_dict(state)

    return await _admin(request, action)


@post("/admin/tasks/{task:str}/rollback", status_code=200)
async def admin_rollback(request: Request, task: str) -> Response:
    async def action() -> Any:
        state = await asyncio.to_thread(
            _in_db, request, lambda db: rollback(db, task, reason="admin API")
        )
        await request.app.state.pool.refresh_now()
        return _state_dict(state)

    return await _admin(request, action)


ADMIN_HANDLERS = [admin_tasks, admin_set_mode, admin_rollback]
