"""The stand-in teacher's Responses API: ``POST /v1/responses`` (whole or streamed as typed
events), ``GET /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items`` and
``DELETE /v1/responses/{id}``.

It keeps the responses it gave (``store`` not false) and follows ``previous_response_id``
through them; an id it did not issue is a 404, as OpenAI answers, so a gateway that passed one
of its own ids on would be caught. The answer is the table entry for the conversation's last
user message (a function-call entry when the request offers function tools); after a
``function_call_output`` it answers ``"Done: "`` and that output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tests.stub_answers import Choice, Table, decide, pieces, text_of

RESPONSES = "/v1/responses"


@dataclass
class Stored:
    response: dict[str, Any]
    input: list[dict[str, Any]]
    previous: str | None


@dataclass
class StubResponses:
    """The responses the stand-in issued, by id."""

    stored: dict[str, Stored] = field(default_factory=dict)

    def answer(
        self, body: Mapping[str, Any], table: Table, model: str, new_id: Callable[[str], str]
    ) -> tuple[int, dict[str, Any]]:
        """(status, response object or error body) for one ``POST /v1/responses``."""
        problem = _check(body)
        if problem is not None:
            return 400, problem
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            message = f"Previous response with id '{previous}' not found."
            return 404, _error(message, "previous_response_id", "previous_response_not_found")
        items = _items(body.get("input"))
        unknown = [i["id"] for i in items if "id" in i and not self.issued(i["id"])]
        if unknown:
            return 404, _error(f"Item with id '{unknown[0]}' not found.", "input", None)
        history = self.history(previous) + items
        functions = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        choice = _choose(history, table, bool(functions), body)
        response = _response(body, choice, history, model, new_id)
        if body.get("store") is not False:
            listed = [_listed(item, new_id) for item in items]
            self.stored[response["id"]] = Stored(response, listed, previous)
        return 200, response

    def issued(self, item_id: str) -> bool:
        return any(
            item.get("id") == item_id
            for stored in self.stored.values()
            for item in stored.response["output"] + stored.input
        )

    def history(self, response_id: str | None) -> list[dict[str, Any]]:
        """Every input and output item of the chain ending at ``response_id``, oldest first."""
        chain: list[dict[str, Any]] = []
        while response_id is not None and response_id in self.stored:
            stored = self.stored[response_id]
            chain = stored.input + stored.response["output"] + chain
            response_id = stored.previous
        return chain

    def route(self, method: str, path: str) -> tuple[int, dict[str, Any]] | None:
        """GET, input_items and DELETE of a stored response; None for another path."""
        rest = path.removeprefix(RESPONSES + "/")
        response_id, _, tail = rest.partition("/")
        stored = self.stored.get(response_id)
        if tail not in ("", "input_items") or method not in ("GET", "DELETE"):
            return None
        if stored is None:
            message = f"Response with id '{response_id}' not found."
            return 404, _error(message, None, None)
        if method == "DELETE" and not tail:
            del self.stored[response_id]
            return 200, {"id": response_id, "object": "response", "deleted": True}
        if tail:
            data = stored.input[::-1]
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            listing = {"object": "list", "data": data, "first_id": first, "last_id": last}
            return 200, {**listing, "has_more": False}
        return 200, stored.response


def _listed(item: dict[str, Any], new_id: Callable[[str], str]) -> dict[str, Any]:
    """An input item as ``input_items`` lists it: with an id, its text as parts."""
    out = {"id": new_id("msg_"), **item}
    if out.get("type", "message") == "message":
        content = out.get("content")
        if isinstance(content, str):
            out["content"] = [{"type": "input_text", "text": content}]
        out = {"type": "message", "status": "completed", **out}
    return out


def _check(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return _error("We could not parse the JSON body of your request.", None, None)
    if not isinstance(body.get("model"), str):
        return _error("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if body.get("input") is None and body.get("previous_response_id") is None:
        return _error("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if "stream_options" in body and not isinstance(body["stream_options"], dict):
        return _error("Invalid type for 'stream_options'.", "stream_options", "invalid_type")
    if body.get("stream_options") and "include_usage" in body["stream_options"]:
        return _error(
            "Unknown parameter: 'stream_options.include_usage'.",
            "stream_options.include_usage",
            "unknown_parameter",
        )
    return None


def _error(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


def _items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [dict(item) for item in value or [] if isinstance(item, dict)]


def _choose(
    history: list[dict[str, Any]], table: Table, functions: bool, body: Mapping[str, Any]
) -> Choice:
    last = history[-1] if history else {}
    if last.get("type") == "function_call_output":
        text = "Done: " + str(last.get("output"))
        return Choice(pieces(text), (), "stop")
    key = ""
    for item in reversed(history):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            key = text_of(item.get("content"))
            break
    limit = {"max_tokens": body.get("max_output_tokens")}
    return decide(table.lookup(key, functions), limit, functions, None)


def _response(
    body: Mapping[str, Any],
    choice: Choice,
    history: list[dict[str, Any]],
    model: str,
    new_id: Callable[[str], str],
) -> dict[str, Any]:
    if choice.tool_calls:
        output = [
            {
                "id": new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "call_id": new_id("call_"),
                "name": call.name,
                "arguments": call.arguments,
            }
            for call in choice.tool_calls
        ]
    else:
        part = {"type": "output_text", "text": choice.text, "annotations": [], "logprobs": []}
        status = "incomplete" if choice.finish_reason == "length" else "completed"
        message = {"id": new_id("msg_"), "type": "message", "status": status, "role": "assistant"}
        output = [{**message, "content": [part]}]
    input_tokens = 3 + sum(4 + len(pieces(text_of(i.get("content")))) for i in history)
    complete = choice.finish_reason != "length"
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if complete else "incomplete",
        "background": False,
        "error": None,
        "incomplete_details": None if complete else {"reason": "max_output_tokens"},
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": choice.tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + choice.tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def response_events(response: dict[str, Any]) -> list[bytes]:
    """The typed SSE events OpenAI streams for ``response`` (no ``[DONE]``)."""
    out: list[bytes] = []

    def add(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(out), **fields}
        out.append(f"event: {kind}\ndata: ".encode() + msgspec.json.encode(data) + b"\n\n")

    opening = {**response, "status": "in_progress", "output": [], "usage": None}
    add("response.created", response=opening)
    add("response.in_progress", response=opening)
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            add("response.output_item.added", output_index=index, item={**item, "arguments": ""})
            for i in range(0, len(item["arguments"]), 6):
                add(
                    "response.function_call_arguments.delta",
                    **where,
                    delta=item["arguments"][i : i + 6],
                )
            add("response.function_call_arguments.done", **where, arguments=item["arguments"])
        else:
            part = item["content"][0]
            added = {**item, "status": "in_progress", "content": []}
            add("response.output_item.added", output_index=index, item=added)
            add("response.content_part.added", **where, content_index=0, part={**part, "text": ""})
            for piece in pieces(part["text"]):
                add(
                    "response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[]
                )
            add(
                "response.output_text.done",
                **where,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            add("response.content_part.done", **where, content_index=0, part=part)
        add("response.output_item.done", output_index=index, item=item)
    terminal = "response.completed" if response["status"] == "completed" else "response.incomplete"
    add(terminal, response=response)
    return out
