"""``POST /v1/feedback``: a score or a correction for a logged answer, used by the distiller.

``score`` is between -1 and 1 (thumbs down is -1, thumbs up 1): a negative score drops the
example from training; a ``correction`` replaces the teacher's answer in training.

Who may give it: a client, on the requests made with its own gateway key (another key's
request is a 404, as if it did not exist), within its rate limit and budget like any call;
or a reviewer with the admin key (``Authorization: Bearer <admin_key>``), on any request. The
row records the key's id and whether the admin key gave it (``reviewed``): a client's
correction trains, but only a reviewed one may enter the held-out slice the gates judge by.
On a gateway without ``api_keys`` there is no identity to tell clients apart: anyone who can
call it may give feedback on any request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency, Provide

from understudy.gateway.api import auth
from understudy.gateway.api.guards import limited_key_id
from understudy.gateway.api.responses import json_response
from understudy.gateway.api.services import Services
from understudy.gateway.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from understudy.gateway.protocol import decode_body
from understudy.storage.database import Store
from understudy.storage.queries import request_owner

MAX_BODY_BYTES = 256 * 1024
"""Largest feedback body."""
MAX_CORRECTION_CHARS = 64 * 1024
"""Longest correction (an answer to train on)."""
MAX_COMMENT_CHARS = 4 * 1024
"""Longest comment."""


class Feedback(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    score: float | None = None
    correction: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class Giver:
    """Who gives feedback: a gateway key's id (None on an open gateway), or the admin key."""

    key_id: str | None
    reviewer: bool


def parse_feedback(raw: bytes) -> Feedback:
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"feedback bodies are limited to {MAX_BODY_BYTES} bytes")
    body = decode_body(raw)
    try:
        fb = msgspec.convert(body, Feedback)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"invalid feedback: {exc}") from None
    if fb.score is None and fb.correction is None:
        raise InvalidRequestError("feedback needs a 'score' or a 'correction'", param="score")
    if fb.score is not None and not -1 <= fb.score <= 1:
        raise InvalidRequestError("'score' must be between -1 and 1", param="score")
    for name, limit in (("correction", MAX_CORRECTION_CHARS), ("comment", MAX_COMMENT_CHARS)):
        value = getattr(fb, name)
        if value is not None and len(value) > limit:
            raise InvalidRequestError(f"'{name}' is limited to {limit} characters", param=name)
    return fb


async def feedback_giver(request: Request, services: NamedDependency[Services]) -> Giver:
    """The admin key (a reviewer), else a client key checked, rate-limited and budgeted like
    any answering call."""
    admin_key = services.settings.admin_key
    presented = auth.bearer(request.headers.get("authorization"))
    if admin_key and auth.matches(presented, [admin_key]):
        return Giver(auth.key_id(admin_key), reviewer=True)
    return Giver(await limited_key_id(request, services), reviewer=False)


def _owner(store: Store, request_id: str) -> tuple[bool, str | None]:
    with store.read() as db:
        return request_owner(db, request_id)


@post(
    "/v1/feedback",
    status_code=200,
    dependencies={"feedback_giver": Provide(feedback_giver)},
)
async def feedback(
    request: Request, feedback_giver: NamedDependency[Giver], services: NamedDependency[Services]
) -> Response:
    """Record feedback on a logged request (see the module's docstring for who may)."""
    giver = feedback_giver
    fb = parse_feedback(await request.body())
    found, owner = await asyncio.to_thread(_owner, services.store, fb.request_id)
    if not found:  # it may still be in the write-behind queue
        await asyncio.to_thread(services.writer.flush, 2.0)
        found, owner = await asyncio.to_thread(_owner, services.store, fb.request_id)
    if not found or (not giver.reviewer and owner != giver.key_id):
        raise NotFoundError(f"no logged request with id {fb.request_id!r}", param="request_id")
    services.writer.submit(
        "feedback",
        {
            "request_id": fb.request_id,
            "created_at": time.time(),
            "score": fb.score,
            "correction": fb.correction,
            "comment": fb.comment,
            "api_key_id": giver.key_id,
            "reviewed": int(giver.reviewer),
        },
    )
    body = {"object": "feedback", "request_id": fb.request_id, "status": "recorded"}
    return json_response(msgspec.json.encode(body), 200, request)
