"""Stored responses: ``GET /v1/responses/{id}``, ``GET .../{id}/input_items`` and
``DELETE /v1/responses/{id}``.

A response the gateway issued (a student answer) is answered from the log, as OpenAI answers
for its stored ones; any other id is the teacher's to answer, and goes to it as it is. A
response created with ``store: false``, deleted, or another gateway key's is not found.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import msgspec

from understudy.gateway.errors import InvalidRequestError
from understudy.gateway.serving.call import RequestContext
from understudy.gateway.serving.conversations import Conversations
from understudy.gateway.serving.replies import BodyReply
from understudy.gateway.teacher.client import TeacherClient
from understudy.student.conversation import input_items

PAGE_LIMIT = 100


class StoredResponses:
    def __init__(self, conversations: Conversations, teacher: TeacherClient) -> None:
        self.conversations = conversations
        self.teacher = teacher

    async def retrieve(
        self, response_id: str, query: Mapping[str, str], ctx: RequestContext
    ) -> BodyReply:
        row = await self.conversations.issued(response_id, ctx.api_key_id)
        if row is None:
            return await self._teacher("GET", f"/responses/{quote(response_id)}", query, ctx)
        return _reply(ctx, row["response_json"].encode())

    async def input_items(
        self, response_id: str, query: Mapping[str, str], ctx: RequestContext
    ) -> BodyReply:
        row = await self.conversations.issued(response_id, ctx.api_key_id)
        if row is None:
            target = f"/responses/{quote(response_id)}/input_items"
            return await self._teacher("GET", target, query, ctx)
        request = json.loads(row["request_json"])
        items = input_items(request.get("input"))
        items = [_with_id(response_id, i, item) for i, item in enumerate(items)]
        return _reply(ctx, msgspec.json.encode(_page(items, query)))

    async def delete(self, response_id: str, ctx: RequestContext) -> BodyReply:
        row = await self.conversations.issued(response_id, ctx.api_key_id)
        if row is None:
            reply = await self._teacher("DELETE", f"/responses/{quote(response_id)}", {}, ctx)
            if reply.status_code == 200:
                await self.conversations.mark_deleted(response_id)
            return reply
        await self.conversations.mark_deleted(response_id)
        body = {"id": response_id, "object": "response", "deleted": True}
        return _reply(ctx, msgspec.json.encode(body))

    async def _teacher(
        self, method: str, path: str, query: Mapping[str, str], ctx: RequestContext
    ) -> BodyReply:
        target = path + (f"?{urlencode(dict(query))}" if query else "")
        answer = await self.teacher.send(
            method, target, authorization=ctx.authorization, extra=ctx.forward_headers
        )
        headers = {"x-request-id": ctx.request_id, **answer.headers}
        return BodyReply(answer.status_code, headers, answer.content)


def _reply(ctx: RequestContext, content: bytes) -> BodyReply:
    return BodyReply(200, {"x-request-id": ctx.request_id}, content)


def _with_id(response_id: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """An input item as OpenAI lists it: with an id (stable for the response) and a status."""
    out = dict(item)
    if "id" not in out:
        digest = hashlib.sha256(f"{response_id}:{index}".encode()).hexdigest()[:48]
        prefix = "msg" if out.get("type", "message") == "message" else "item"
        out["id"] = f"{prefix}_{digest}"
    if out.get("type", "message") == "message":
        out["type"] = "message"
        content = out.get("content")
        if isinstance(content, str):
            out["content"] = [{"type": "input_text", "text": content}]
        out.setdefault("status", "completed")
    return out


def _page(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of items: ``order`` (``desc`` by default, as OpenAI), ``after``, ``limit``."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("'order' must be 'asc' or 'desc'", param="order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise InvalidRequestError("'limit' must be an integer", param="limit") from None
    if not 1 <= limit <= PAGE_LIMIT:
        raise InvalidRequestError(f"'limit' must be between 1 and {PAGE_LIMIT}", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }
