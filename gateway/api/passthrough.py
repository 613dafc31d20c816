"""Every path under ``/v1/`` the gateway does not own, any method: glue only. The caller is
checked (gateway key, rate limit, budget) like chat; :mod:`gateway.serving.passthrough`
relays the call. The paths the gateway owns are matched first. The Realtime WebSocket is
refused with an error event."""

from __future__ import annotations

import time

from litestar import Request, WebSocket, route, websocket
from litestar.di import NamedDependency
from litestar.response.base import ASGIResponse

from understudy.gateway.api.responses import relay_response, request_id
from understudy.gateway.api.services import Services
from understudy.gateway.errors import InvalidRequestError
from understudy.gateway.serving.passthrough import REALTIME_MESSAGE, PassCall
from understudy.gateway.serving.passthrough_wire import WHOLE_BYTES

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
REALTIME_CLOSE_CODE = 1008  # policy violation


@route(
    "/v1/{path:path}",
    http_method=METHODS,
    request_max_body_size=None,  # the relay holds bodies to passthrough.max_body_bytes
    status_code=200,
)
async def passthrough(
    request: Request,
    services: NamedDependency[Services],
    limited_key_id: NamedDependency[str | None],
) -> ASGIResponse:
    started, created_at = time.perf_counter(), time.time()
    scope = request.scope
    path = scope["path"]
    segments = path.split("/")
    if "." in segments or ".." in segments:
        headers = {"x-request-id": request_id(request)}
        raise InvalidRequestError(f"Invalid path: {path}.", headers=headers)
    sent = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
    length = request.headers.get("content-length")
    size = int(length) if length and length.isdigit() else None
    small = size is not None and size <= WHOLE_BYTES
    call = PassCall(
        request_id=request_id(request),
        method=request.method,
        path=path,
        raw_path=(scope.get("raw_path") or path.encode()).decode("latin-1"),
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=sent,
        body=await request.body() if small else request.stream(),
        content_length=size,
        authorization=request.headers.get("authorization"),
        api_key_id=limited_key_id,
        started=started,
        created_at=created_at,
    )
    return relay_response(await services.passthrough.relay(call))


@route("/v1/realtime", http_method=METHODS, request_max_body_size=None, status_code=200)
async def realtime_http(request: Request, api_key_id: NamedDependency[str | None]) -> None:
    """The Realtime endpoint over plain HTTP: the same refusal, as a JSON error."""
    raise InvalidRequestError(
        REALTIME_MESSAGE,
        code="unsupported_endpoint",
        headers={"x-request-id": request_id(request)},
    )


@websocket("/v1/realtime")
async def realtime(socket: WebSocket) -> None:
    """Not proxied: an OpenAI Realtime ``error`` event, then the socket is closed."""
    await socket.accept()
    await socket.send_json(
        {
            "type": "error",
            "event_id": None,
            "error": {
                "type": "invalid_request_error",
                "code": "unsupported_endpoint",
                "message": REALTIME_MESSAGE,
                "param": None,
            },
        }
    )
    await socket.close(code=REALTIME_CLOSE_CODE, reason="the Realtime API is not proxied")


HANDLERS = [passthrough, realtime_http, realtime]
