"""Turning serving's replies, and every error, into litestar responses.

:func:`error_response` is the one place an exception becomes an HTTP answer: an
:class:`UnderstudyError` as it is, litestar's own HTTP errors translated, anything else a 500
(logged, never shown). Handlers raise; they do not build error responses.
"""

from __future__ import annotations

import logging
import sqlite3

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse

from understudy.gateway.errors import (
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnderstudyError,
    error_body,
)
from understudy.gateway.serving.passthrough import PassReply
from understudy.gateway.serving.replies import BodyReply, Reply, new_request_id
from understudy.storage.engine import is_unavailable

log = logging.getLogger("understudy.gateway")

JSON = "application/json"


def request_id(request: Request) -> str:
    """The id of this request, made on first use and sent back as ``x-request-id``."""
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = new_request_id()
    return rid


def json_response(content: bytes, status: int, request: Request) -> Response:
    return Response(
        content=content,
        status_code=status,
        media_type=JSON,
        headers={"x-request-id": request_id(request)},
    )


def to_response(reply: Reply) -> Response:
    if isinstance(reply, BodyReply):
        return Response(
            content=reply.content,
            status_code=reply.status_code,
            headers=reply.headers,
            media_type=JSON,
        )
    headers = {**reply.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
    return Stream(content=reply.events, headers=headers, media_type="text/event-stream")


def relay_response(reply: PassReply) -> ASGIResponse:
    """A relayed answer: the teacher's status, headers and bytes, sent as they arrive (a small
    one read whole, in one piece)."""
    headers = list(reply.headers)  # a list: a header may come more than once
    if reply.content_type:
        headers.append(("content-type", reply.content_type))
    if isinstance(reply.body, bytes):
        return ASGIResponse(body=reply.body, status_code=reply.status_code, headers=headers)
    return ASGIStreamingResponse(
        iterator=reply.body, status_code=reply.status_code, headers=headers
    )


def error_response(request: Request, exc: Exception) -> Response:
    """The app's exception handler: the OpenAI error shape, its status and headers."""
    err = _as_understudy_error(request, exc)
    return Response(
        content=error_body(err),
        status_code=err.status_code,
        media_type=JSON,
        headers={**err.headers, "x-request-id": request_id(request)},
    )


def _as_understudy_error(request: Request, exc: Exception) -> UnderstudyError:
    if isinstance(exc, UnderstudyError):
        return exc
    if isinstance(exc, HTTPException):
        return _from_litestar(request, exc)
    if isinstance(exc, sqlite3.OperationalError) or is_unavailable(exc):  # a state, not a bug
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return ServiceUnavailableError("The database is unavailable; try again shortly.")
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return UnderstudyError("The server had an error while processing your request.")


def _from_litestar(request: Request, exc: HTTPException) -> UnderstudyError:
    path = request.url.path
    if exc.status_code == 404:
        return NotFoundError(f"Unknown request URL: {request.method} {path}.")
    if exc.status_code == 405:
        return MethodNotAllowedError(f"Method {request.method} is not allowed for {path}.")
    if exc.status_code == 413:
        return PayloadTooLargeError("The request body is larger than the gateway accepts.")
    err = UnderstudyError(str(exc.detail))
    err.status_code = exc.status_code
    err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return err
