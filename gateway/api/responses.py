"""Turning service replies into litestar responses."""

from __future__ import annotations

import secrets

from litestar import Response
from litestar.response import Stream
from understudy.gateway.serving.pipeline import BodyReply, Reply


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def json_response(content: bytes, status: int, request_id: str) -> Response:
    return Response(
        content=content,
        status_code=status,
        media_type="application/json",
        headers={"x-request-id": request_id},
    )


def to_response(reply: Reply) -> Response:
    if isinstance(reply, BodyReply):
        return Response(
            content=reply.content,
            status_code=reply.status_code,
            headers=reply.headers,
            media_type="application/json",
        )
    headers = {**reply.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
    return Stream(content=reply.events, headers=headers, media_type="text/event-stream")
