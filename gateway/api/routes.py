"""Paths and glue only: each handler authenticates, reads the body and calls the service."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
from litestar import Request, Response, get, post
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from understudy.gateway.api import auth
from understudy.gateway.api.responses import json_response as _json
from understudy.gateway.api.responses import new_request_id, to_response
from understudy.gateway.errors import UnderstudyError, error_body
from understudy.gateway.serving.pipeline import (
    CHAT,
    COMPLETIONS,
    Endpoint,
    GatewayService,
    RequestContext,
)
from understudy.gateway.serving.tasks import TASK_HEADER

FORWARDED_HEADERS = ("openai-organization", "openai-project", "openai-beta")


async def _serve(request: Request, endpoint: Endpoint) -> Response:
    request_id = new_request_id()
    request.state.request_id = request_id
    state = request.app.state
    headers = request.headers
    try:
        key_id = auth.authenticate(
            state.settings.api_keys,
            headers.get("authorization"),
            headers.get(auth.KEY_HEADER),
            state.settings.teacher.pass_through_auth,
        )
    except UnderstudyError as exc:
        return _json(error_body(exc), exc.status_code, request_id)
    raw = await request.body()
    ctx = RequestContext(
        request_id=request_id,
        authorization=headers.get("authorization"),
        api_key_id=key_id,
        task_header=headers.get(TASK_HEADER),
        forward_headers={h: headers[h] for h in FORWARDED_HEADERS if h in headers},
    )
    service: GatewayService = state.service
    return to_response(await service.handle(endpoint, ctx, raw))


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request) -> Response:
    return await _serve(request, CHAT)


@post("/v1/completions", status_code=200)
async def completions(request: Request) -> Response:
    return await _serve(request, COMPLETIONS)


@get("/v1/models")
async def models(request: Request) -> Response:
    """The teacher's model list, plus every model name with a configured route."""
    state = request.app.state
    request_id = _request_id(request)
    try:
        key_id = auth.authenticate(
            state.settings.api_keys,
            request.headers.get("authorization"),
            request.headers.get(auth.KEY_HEADER),
            state.settings.teacher.pass_through_auth,
        )
    except UnderstudyError as exc:
        return _json(error_body(exc), exc.status_code, request_id)
    del key_id
    data: list[dict[str, Any]] = []
    try:
        upstream = await state.teacher.get(
            "/models", authorization=request.headers.get("authorization"), timeout_s=10.0
        )
        if upstream.status_code == 200:
            data = list(msgspec.json.decode(upstream.content).get("data") or [])
    except (httpx.HTTPError, msgspec.DecodeError, AttributeError):
        data = []  # the list degrades to the configured routes
    known = {m.get("id") for m in data if isinstance(m, dict)}
    for name in state.settings.routes:
        if name not in known:
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "understudy"})
    return _json(msgspec.json.encode({"object": "list", "data": data}), 200, request_id)


@get("/health")
async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return _json(b'{"status":"ok"}', 200, _request_id(request))


@get("/ready")
async def ready(request: Request) -> Response:
    """Readiness: the teacher answers and the database takes writes."""
    state = request.app.state
    teacher_ok, teacher_detail = await _teacher_reachable(state.teacher)
    db_problem = await asyncio.to_thread(state.writer.check_writable)
    if db_problem is None and not state.writer.alive:
        db_problem = "the request log writer is not running"
    stats = state.writer.stats()
    body = {
        "status": "ready" if teacher_ok and db_problem is None else "not_ready",
        "teacher": {"ok": teacher_ok, "detail": teacher_detail},
        "database": {
            "ok": db_problem is None,
            "detail": db_problem or "writable",
            "log_healthy": stats.healthy,
            "log_last_error": stats.last_error,
            "queue_depth": stats.depth,
            "dropped_rows": stats.dropped,
        },
    }
    status = 200 if body["status"] == "ready" else 503
    return _json(msgspec.json.encode(body), status, _request_id(request))


@get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(
        content=generate_latest(request.app.state.metrics.registry),
        media_type=CONTENT_TYPE_LATEST,
    )


async def _teacher_reachable(teacher: Any) -> tuple[bool, str]:
    try:
        response = await teacher.get("/models", timeout_s=3.0)
    except httpx.HTTPError as exc:
        return False, f"unreachable: {type(exc).__name__}"
    if response.status_code >= 500:
        return False, f"HTTP {response.status_code}"
    return True, f"HTTP {response.status_code}"


def _request_id(request: Request) -> str:
    request.state.request_id = new_request_id()
    return request.state.request_id


HANDLERS = [chat_completions, completions, models, health, ready, metrics]
