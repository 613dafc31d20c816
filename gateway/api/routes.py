"""Paths and glue only: each handler takes its checked caller and services, reads the body
and calls the pipeline. Errors are raised; :mod:`gateway.api.responses` answers them."""

from __future__ import annotations

import httpx
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from understudy.gateway.api.disconnect import unless_client_leaves
from understudy.gateway.api.responses import json_response, request_id, to_response
from understudy.gateway.api.services import Config, Services
from understudy.gateway.serving.call import CHAT, COMPLETIONS, RESPONSES, Endpoint, RequestContext
from understudy.gateway.serving.pipeline import Pipeline
from understudy.gateway.serving.stored import StoredResponses
from understudy.gateway.serving.tasks import TASK_HEADER
from understudy.gateway.teacher.client import TeacherClient

FORWARDED_HEADERS = ("openai-organization", "openai-project", "openai-beta")


def _context(request: Request, key_id: str | None) -> RequestContext:
    headers = request.headers
    return RequestContext(
        request_id=request_id(request),
        authorization=headers.get("authorization"),
        api_key_id=key_id,
        task_header=headers.get(TASK_HEADER),
        forward_headers={h: headers[h] for h in FORWARDED_HEADERS if h in headers},
    )


async def _serve(
    request: Request, endpoint: Endpoint, pipeline: Pipeline, key_id: str | None
) -> Response:
    ctx = _context(request, key_id)
    raw = await request.body()
    return to_response(await unless_client_leaves(request, pipeline.handle(endpoint, ctx, raw)))


def _stored(services: Services) -> StoredResponses:
    assert services.pipeline.conversations is not None
    return StoredResponses(services.pipeline.conversations, services.teacher)


@post("/v1/chat/completions", status_code=200)
async def chat_completions(
    request: Request,
    services: NamedDependency[Services],
    limited_key_id: NamedDependency[str | None],
) -> Response:
    return await _serve(request, CHAT, services.pipeline, limited_key_id)


@post("/v1/completions", status_code=200)
async def completions(
    request: Request,
    services: NamedDependency[Services],
    limited_key_id: NamedDependency[str | None],
) -> Response:
    return await _serve(request, COMPLETIONS, services.pipeline, limited_key_id)


@post("/v1/responses", status_code=200)
async def responses(
    request: Request,
    services: NamedDependency[Services],
    limited_key_id: NamedDependency[str | None],
) -> Response:
    return await _serve(request, RESPONSES, services.pipeline, limited_key_id)


@get("/v1/responses/{response_id:str}")
async def retrieve_response(
    request: Request,
    response_id: FromPath[str],
    services: NamedDependency[Services],
    api_key_id: NamedDependency[str | None],
) -> Response:
    ctx = _context(request, api_key_id)
    return to_response(await _stored(services).retrieve(response_id, request.query_params, ctx))


@get("/v1/responses/{response_id:str}/input_items")
async def response_input_items(
    request: Request,
    response_id: FromPath[str],
    services: NamedDependency[Services],
    api_key_id: NamedDependency[str | None],
) -> Response:
    ctx = _context(request, api_key_id)
    stored = _stored(services)
    return to_response(await stored.input_items(response_id, request.query_params, ctx))


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(
    request: Request,
    response_id: FromPath[str],
    services: NamedDependency[Services],
    api_key_id: NamedDependency[str | None],
) -> Response:
    ctx = _context(request, api_key_id)
    return to_response(await _stored(services).delete(response_id, ctx))


@get("/v1/models")
async def models(
    request: Request,
    settings: Config,
    teacher: NamedDependency[TeacherClient],
    api_key_id: NamedDependency[str | None],
) -> Response:
    """The teacher's model list, plus every model name with a configured route (for a caller
    with a gateway key, when the gateway needs one)."""
    data: list[dict[str, object]] = []
    try:
        upstream = await teacher.get(
            "/models", authorization=request.headers.get("authorization"), timeout_s=10.0
        )
        if upstream.status_code == 200:
            data = list(msgspec.json.decode(upstream.content).get("data") or [])
    except (httpx.HTTPError, msgspec.DecodeError, AttributeError):
        data = []  # the list degrades to the configured routes
    known = {m.get("id") for m in data if isinstance(m, dict)}
    for name in settings.routes:
        if name not in known:
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "understudy"})
    return json_response(msgspec.json.encode({"object": "list", "data": data}), 200, request)


@get("/health")
async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return json_response(b'{"status":"ok"}', 200, request)


@get("/ready")
async def ready(request: Request, services: NamedDependency[Services]) -> Response:
    """Readiness: the teacher answers and the database takes writes (the request log's own
    writes included: 503 while they fail); checked at most once a second
    (:mod:`gateway.api.readiness`)."""
    status, body = await services.readiness.answer()
    return json_response(msgspec.json.encode(body), status, request)


METRICS_MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
"""Prometheus' text format without its charset: Litestar adds one to every ``text/`` type."""


@get("/metrics")
async def metrics(services: NamedDependency[Services]) -> Response:
    """Prometheus metrics, rendered on a thread of their own, off the event loop."""
    content = await services.scrapes.run(generate_latest, services.metrics.registry)
    return Response(content=content, media_type=METRICS_MEDIA_TYPE)


HANDLERS = [
    chat_completions,
    completions,
    responses,
    retrieve_response,
    response_input_items,
    delete_response,
    models,
    health,
    ready,
    metrics,
]
