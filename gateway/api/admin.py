"""Admin endpoints: task modes and rollback. They need the admin key; client keys do not work.

A task name in a path must be a valid one (1-64 of ``[A-Za-z0-9._-]``, not ``.`` or ``..``):
anything else is a 400 before the registry is touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from understudy.gateway.api.guards import Admin
from understudy.gateway.api.responses import json_response
from understudy.gateway.errors import InvalidRequestError, NotFoundError
from understudy.gateway.protocol import decode_body
from understudy.gateway.serving.pool import StudentPool
from understudy.storage.database import Store
from understudy.storage.records import valid_task_name
from understudy.storage.registry import (
    MODES,
    RegistryError,
    TaskState,
    all_task_states,
    rollback,
    set_mode,
)

if TYPE_CHECKING:
    import sqlite_utils


def _state_dict(state: TaskState) -> dict[str, Any]:
    return {
        "task": state.task,
        "mode": state.mode,
        "champion": state.champion_id,
        "previous": state.previous_id,
        "updated_at": state.updated_at,
        "reason": state.reason,
    }


async def _change(store: Store, change: Callable[[sqlite_utils.Database], TaskState]) -> TaskState:
    """Apply a registry change off the event loop; an unknown task or model is a 404."""

    def run() -> TaskState:
        try:
            with store.write() as db:
                return change(db)
        except RegistryError as exc:
            raise NotFoundError(str(exc)) from None

    return await asyncio.to_thread(run)


def checked_task(task: str) -> str:
    """``task`` when it is a valid task name, else a 400 naming the rule."""
    if not valid_task_name(task):
        raise InvalidRequestError(
            "Invalid task name: 1-64 characters of letters, digits, '.', '_' and '-' "
            "(not '.' or '..').",
            param="task",
        )
    return task


def _read_states(store: Store) -> list[TaskState]:
    with store.read() as db:
        return all_task_states(db)


@get("/admin/tasks")
async def admin_tasks(
    request: Request, admin: NamedDependency[Admin], store: NamedDependency[Store]
) -> Response:
    states = await asyncio.to_thread(_read_states, store)
    body = {"data": [_state_dict(s) for s in states]}
    return json_response(msgspec.json.encode(body), 200, request)


@post("/admin/tasks/{task:str}/mode", status_code=200)
async def admin_set_mode(
    request: Request,
    task: FromPath[str],
    admin: NamedDependency[Admin],
    store: NamedDependency[Store],
    pool: NamedDependency[StudentPool],
) -> Response:
    task = checked_task(task)
    body = decode_body(await request.body())
    mode = body.get("mode")
    if mode not in MODES:
        raise InvalidRequestError(f"'mode' must be one of {', '.join(MODES)}", param="mode")
    state = await _change(store, lambda db: set_mode(db, task, mode, reason="admin API"))
    await pool.refresh_now()
    return json_response(msgspec.json.encode(_state_dict(state)), 200, request)


@post("/admin/tasks/{task:str}/rollback", status_code=200)
async def admin_rollback(
    request: Request,
    task: FromPath[str],
    admin: NamedDependency[Admin],
    store: NamedDependency[Store],
    pool: NamedDependency[StudentPool],
) -> Response:
    """Serve an earlier champion: ``{"to": "task@vN"}`` names it; without it, the newest
    earlier champion not rolled back. Repeating a rollback never re-promotes what it left."""
    task = checked_task(task)
    raw = await request.body()
    to = decode_body(raw).get("to") if raw.strip() else None
    if to is not None and not isinstance(to, str):
        raise InvalidRequestError("'to' must be a model version such as task@v1", param="to")
    state = await _change(store, lambda db: rollback(db, task, reason="admin API", to=to))
    await pool.refresh_now()
    return json_response(msgspec.json.encode(_state_dict(state)), 200, request)


ADMIN_HANDLERS = [admin_tasks, admin_set_mode, admin_rollback]
