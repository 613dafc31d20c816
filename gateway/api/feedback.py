"""``POST /v1/feedback``: a score or a correction for a logged answer, used by the distiller.

``score`` is between -1 and 1 (thumbs down is -1, thumbs up 1): a negative score drops the
example from training; a ``correction`` replaces the teacher's answer in training.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency

from understudy.gateway.api.responses import json_response
from understudy.gateway.errors import InvalidRequestError, NotFoundError
from understudy.gateway.protocol import decode_body
from understudy.storage.database import Store
from understudy.storage.queries import get_request
from understudy.storage.request_log import RequestLogWriter


class Feedback(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    score: float | None = None
    correction: str | None = None
    comment: str | None = None


def parse_feedback(raw: bytes) -> Feedback:
    body = decode_body(raw)
    try:
        fb = msgspec.convert(body, Feedback)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"invalid feedback: {exc}") from None
    if fb.score is None and fb.correction is None:
        raise InvalidRequestError("feedback needs a 'score' or a 'correction'", param="score")
    if fb.score is not None and not -1 <= fb.score <= 1:
        raise InvalidRequestError("'score' must be between -1 and 1", param="score")
    return fb


def _exists(store: Store, request_id: str) -> bool:
    with store.read() as db:
        return get_request(db, request_id) is not None


@post("/v1/feedback", status_code=200)
async def feedback(
    request: Request,
    api_key_id: NamedDependency[str | None],
    store: NamedDependency[Store],
    writer: NamedDependency[RequestLogWriter],
) -> Response:
    """Record feedback on a logged request (for a caller with a gateway key, when the gateway
    needs one)."""
    fb = parse_feedback(await request.body())
    found = await asyncio.to_thread(_exists, store, fb.request_id)
    if not found:  # it may still be in the write-behind queue
        await asyncio.to_thread(writer.flush, 2.0)
        found = await asyncio.to_thread(_exists, store, fb.request_id)
    if not found:
        raise NotFoundError(f"no logged request with id {fb.request_id!r}", param="request_id")
    writer.submit(
        "feedback",
        {
            "request_id": fb.request_id,
            "created_at": time.time(),
            "score": fb.score,
            "correction": fb.correction,
            "comment": fb.comment,
        },
    )
    body = {"object": "feedback", "request_id": fb.request_id, "status": "recorded"}
    return json_response(msgspec.json.encode(body), 200, request)
