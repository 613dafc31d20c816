"""Responses API state from the log: the turns behind a ``previous_response_id``, and what the
student and the teacher each get to read of them.

Every answered Responses request is logged with its response id. A chain is walked back
through the log (the rows written a moment ago are kept in memory until the write-behind log
has them): the student reads the whole conversation as chat messages; the teacher gets the
request as sent, unless its newest turns are the gateway's (student answers, ids the teacher
has never seen): then those turns are expanded into ``input`` and ``previous_response_id``
points at the teacher's newest response in the chain, which it knows whole (or is dropped when
the chain has none: the whole conversation is then in ``input``).

Behind a load balancer the follow-up may reach another replica before the row of the response
it names is committed (the log writes behind, ``storage.commit_interval_ms``). So an id the log
does not hold is read once more, after two commit intervals (the writer commits at least once
in that time), before it is taken for someone else's (the teacher's, or not found).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import msgspec

from understudy.gateway.errors import NotFoundError
from understudy.gateway.protocol import ResponsesRequest
from understudy.gateway.serving.call import Call
from understudy.storage.database import Store
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter
from understudy.storage.responses import find_response, mark_response_deleted
from understudy.student.conversation import (
    Turn,
    chat_messages,
    input_items,
    output_items,
    walk_chain,
)

RECENT = 1024  # responses kept in memory until the log surely holds them


def not_found(response_id: str, param: str | None = None) -> NotFoundError:
    what = "Previous response" if param else "Response"
    return NotFoundError(f"{what} with id '{response_id}' not found.", param=param)


class Conversations:
    def __init__(self, store: Store, writer: RequestLogWriter) -> None:
        self.store = store
        self.writer = writer
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.settle_s = 2 * writer.interval
        """How long a miss waits before the log is read once more: another replica's row
        is committed by then."""
        writer.add_listener(self._remember)

    def _remember(self, table: str, row: dict[str, Any]) -> None:
        if table != RequestRecord.TABLE or not row.get("response_id"):
            return
        if row.get("served_by") == "shadow" or row.get("status") != "ok":
            return
        self._recent[row["response_id"]] = row
        self._recent.move_to_end(row["response_id"])
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    # -- looking responses up --------------------------------------------------------------

    def _row(self, db: Any, response_id: str) -> dict[str, Any] | None:
        row = self._recent.get(response_id)
        return row if row is not None else find_response(db, response_id)

    async def issued(self, response_id: str, key_id: str | None) -> dict[str, Any] | None:
        """The log row of a response the gateway issued (a student answer), visible to
        ``key_id``; None for any other id (the teacher's, or unknown). A deleted or
        unstored one, or another key's, is not found (404)."""
        row = self._recent.get(response_id)
        if row is None:
            row = await asyncio.to_thread(self._read, response_id)
        if row is None:  # perhaps another replica's, not committed yet
            await asyncio.sleep(self.settle_s)
            row = await asyncio.to_thread(self._read, response_id)
        if row is None or row["served_by"] != "student":
            return None
        if not _usable(row, key_id):
            raise not_found(response_id)
        return row

    def _read(self, response_id: str) -> dict[str, Any] | None:
        if not self.store.exists():
            return None
        with self.store.read() as db:
            return find_response(db, response_id)

    async def mark_deleted(self, response_id: str) -> None:
        """Mark a response deleted in the log (its row written first)."""
        await asyncio.to_thread(self.writer.flush, 5.0)
        row = self._recent.get(response_id)
        if row is not None:
            row["deleted_at"] = time.time()
        await asyncio.to_thread(self._delete, response_id)

    def _delete(self, response_id: str) -> None:
        with self.store.write() as db:
            mark_response_deleted(db, response_id, time.time())

    # -- a request's conversation ----------------------------------------------------------

    async def prepare(self, call: Call) -> None:
        """Fill in what the student reads (``call.messages``) and what the teacher gets
        (``call.upstream``, when the chain must be expanded) for a Responses request."""
        req = call.req
        assert isinstance(req, ResponsesRequest)
        call.record.stored = req.stored
        new_items = input_items(req.input)
        if req.previous_response_id is None:
            call.messages = chat_messages(req.instructions, new_items)
            return
        key_id = call.ctx.api_key_id
        turns, rest = await asyncio.to_thread(self._walk, req.previous_response_id, key_id)
        if rest == req.previous_response_id:  # none of it logged: perhaps not committed yet
            await asyncio.sleep(self.settle_s)
            turns, rest = await asyncio.to_thread(self._walk, req.previous_response_id, key_id)
        history = _history(turns)
        if rest is None:
            call.messages = chat_messages(req.instructions, history + new_items)
        else:
            call.no_student = "the conversation starts with a response the log does not hold"
        call.upstream = _teacher_body(call.body, turns, rest, new_items)

    def _walk(self, previous_id: str, key_id: str | None) -> tuple[list[Turn], str | None]:
        if not self.store.exists():
            return [], previous_id
        with self.store.read() as db:

            def lookup(response_id: str) -> Turn | None:
                row = self._row(db, response_id)
                if row is None:
                    return None
                if not _usable(row, key_id):
                    if row["served_by"] == "student":
                        raise not_found(response_id, "previous_response_id")
                    return None  # the teacher's: it answers for it
                return _turn(row)

            chain = walk_chain(previous_id, lookup)
        return chain.turns, chain.rest


def _teacher_body(
    body: Mapping[str, Any], turns: list[Turn], rest: str | None, new_items: list[dict[str, Any]]
) -> bytes | None:
    """The request as the teacher gets it: as sent when the newest turn is its own; else the
    student turns since its newest one expanded into ``input``, chained to that one (or to the
    oldest id the log does not hold; to nothing when the log holds the whole chain)."""
    teacher_turns = [i for i, turn in enumerate(turns) if turn.source != "student"]
    anchor = teacher_turns[-1] if teacher_turns else None
    tail = turns[anchor + 1 :] if anchor is not None else turns
    if not tail:
        return None
    sent = {k: v for k, v in body.items() if k != "previous_response_id"}
    sent["input"] = _history(tail) + new_items
    previous = turns[anchor].response_id if anchor is not None else rest
    if previous is not None:
        sent["previous_response_id"] = previous
    return msgspec.json.encode(sent)


def _usable(row: Mapping[str, Any], key_id: str | None) -> bool:
    """Stored, not deleted, and the caller's (when the gateway has keys)."""
    if row.get("stored") == 0 or row.get("deleted_at") is not None:
        return False
    return key_id is None or row.get("api_key_id") in (None, key_id)


def _turn(row: Mapping[str, Any]) -> Turn:
    return Turn(
        response_id=row["response_id"],
        request=json.loads(row["request_json"]),
        response=json.loads(row["response_json"] or "{}"),
        source=row["served_by"],
    )


def _history(turns: list[Turn]) -> list[dict[str, Any]]:
    """Every item of the chain, oldest first; a student turn's output without the gateway's
    item ids (the teacher would look them up)."""
    items: list[dict[str, Any]] = []
    for turn in turns:
        items += input_items(turn.request.get("input"))
        for item in output_items(turn.response):
            if turn.source == "student":
                item = {k: v for k, v in item.items() if k not in ("id", "status")}
            items.append(item)
    return items
