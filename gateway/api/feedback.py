"""``POST /v1/feedback``: a score or a correction for a logged answer, used by the distiller.

``score`` is between -1 and 1 (thumbs down is -1, thumbs up 1): a negative score drops the
example from training; a ``correction`` replaces the teacher's answer in training.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from litestar import Request, Response, post
from understudy.gateway.api import auth
from understudy.gateway.api.responses import json_response, new_request_id
from understudy.gateway.errors import (
    InvalidRequestError,
    NotFoundError,
    UnderstudyError,
    error_body,
)
from understudy.gateway.protocol import decode_body
from understudy.storage.database import open_database
from understudy.storage.queries import get_request


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


def _exists(db_path: object, request_id: str) -> bool:
    db = open_database(db_path, migrate_schema=False)  # type: ignore[arg-type]
    try:
        return get_request(db, request_id) is not None
    finally:
        db.conn.close()


@post("/v1/feedback", status_code=200)
async def feedback(request: Request) -> Response:
    state = request.app.state
    request_id = new_request_id()
    try:
        auth.authenticate(
            state.settings.api_keys,
            request.headers.get("authorization"),
            request.headers.get(auth.KEY_HEADER),
            state.settings.teacher.pass_through_auth,
        )
        fb = parse_feedback(await request.body())
        found = await asyncio.to_thread(_exists, state.settings.db_path, fb.request_id)
        if not found:  # it may still be in the write-behind queue
            await asyncio.to_thread(state.writer.flush, 2.0)
            found = await asyncio.to_thread(_exists, state.settings.db_path, fb.request_id)
        if not found:
            raise NotFoundError(f"no logged request with id {fb.request_id!r}", param="request_id")
    except UnderstudyError as exc:
        return json_response(error_body(exc), exc.status_code, request_id)
    state.writer.submit(
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
    return json_response(msgspec.json.encode(body), 200, request_id)
