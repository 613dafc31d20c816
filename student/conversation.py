"""Responses API exchanges as the chat conversations a student reads and learns from.

A Responses request carries ``instructions`` and ``input`` (a string or a list of items), and
may continue an earlier response through ``previous_response_id``. The student speaks chat, so
serving, the distiller's dataset and the export all read a Responses exchange through these
functions: a chain of turns becomes one list of chat messages, an answer its text.

Plain data in, plain data out; ``None`` where the exchange holds something a chat conversation
cannot carry (images, files, built-in tool calls, item references).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_TEXT_PARTS = ("input_text", "output_text", "text")
_SKIPPED_ITEMS = ("reasoning",)  # a reasoning model's notes: not part of the conversation


def input_items(value: Any) -> list[dict[str, Any]]:
    """A request's ``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def output_items(response: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A response object's ``output`` items."""
    output = response.get("output") if isinstance(response, Mapping) else None
    return [item for item in output or [] if isinstance(item, dict)]


def chat_messages(
    instructions: Any, items: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]] | None:
    """``instructions`` (as the system message) and the items, oldest first, as chat messages;
    None when an item has no chat equivalent."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif instructions not in (None, ""):
        return None  # instructions given as items (a stored prompt's): not read here
    for item in items:
        kind = item.get("type", "message")
        if kind in _SKIPPED_ITEMS:
            continue
        if kind == "message":
            text = content_text(item.get("content"))
            if text is None or item.get("role") not in ("user", "system", "developer", "assistant"):
                return None
            messages.append({"role": str(item["role"]), "content": text})
        elif kind == "function_call":
            _add_tool_call(messages, item)
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else content_text(output)
            if text is None:
                return None
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        else:
            return None
    return messages


def _add_tool_call(messages: list[dict[str, Any]], item: Mapping[str, Any]) -> None:
    call = {
        "id": item.get("call_id"),
        "type": "function",
        "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
        last["tool_calls"].append(call)  # parallel calls share one assistant message
    else:
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})


def content_text(content: Any) -> str | None:
    """A message's text: a string, or its text parts joined; None for images, files, audio."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") in _TEXT_PARTS for p in content
    ):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def response_text(response: Mapping[str, Any] | None) -> str | None:
    """The answer's text (its output messages' text); function calls as JSON; None without
    either."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output_items(response):
        if item.get("type") == "message":
            texts.append(content_text(item.get("content")) or "")
        elif item.get("type") == "function_call":
            calls.append({"name": item.get("name"), "arguments": item.get("arguments")})
    if calls:
        return json.dumps(calls)
    return "".join(texts) if texts else None


def has_function_calls(response: Mapping[str, Any] | None) -> bool:
    return any(item.get("type") == "function_call" for item in output_items(response))


@dataclass
class Turn:
    """One logged response of a chain: what was asked and what was answered."""

    response_id: str
    request: Mapping[str, Any]
    response: Mapping[str, Any]
    source: str = "teacher"  # who answered: "teacher" or "student"


@dataclass
class Chain:
    """The turns before a request, oldest first; ``rest`` is the id the walk stopped at (a
    response not in the log), None when the chain was walked to its start."""

    turns: list[Turn]
    rest: str | None = None

    def items(self) -> list[dict[str, Any]]:
        """Every input and output item of the chain, oldest first."""
        out: list[dict[str, Any]] = []
        for turn in self.turns:
            out += input_items(turn.request.get("input"))
            out += output_items(turn.response)
        return out


def walk_chain(
    previous_id: str | None,
    lookup: Callable[[str], Turn | None],
    *,
    stop: Callable[[Turn], bool] = lambda turn: False,
    limit: int = 1000,
) -> Chain:
    """Follow ``previous_response_id`` links back through ``lookup`` (None: not logged) until
    the start, an id not logged, or a turn for which ``stop`` is true (kept as ``rest``)."""
    turns: list[Turn] = []
    current = previous_id
    while current is not None and len(turns) < limit:
        turn = lookup(current)
        if turn is None or stop(turn):
            return Chain(turns[::-1], current)
        turns.append(turn)
        previous = turn.request.get("previous_response_id")
        current = previous if isinstance(previous, str) and previous else None
    return Chain(turns[::-1], current)


def exchange_messages(
    request: Mapping[str, Any], lookup: Callable[[str], Turn | None]
) -> list[dict[str, Any]] | None:
    """The chat messages a logged Responses request stands for, its chain expanded through
    ``lookup``; None when part of the chain is not logged or cannot be read as chat."""
    chain = walk_chain(_previous(request), lookup)
    if chain.rest is not None:
        return None
    items = chain.items() + input_items(request.get("input"))
    return chat_messages(request.get("instructions"), items)


def _previous(request: Mapping[str, Any]) -> str | None:
    previous = request.get("previous_response_id")
    return previous if isinstance(previous, str) and previous else None


def exchange_answer(response: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """A Responses answer's text, or why it teaches nothing (the distiller's reasons, as for
    chat: truncated, a tool call, a refusal, no answer)."""
    if response.get("status") == "incomplete":
        return None, "dropped_truncated"
    if has_function_calls(response):
        return None, "dropped_tool_call"
    for item in output_items(response):
        for part in item.get("content") or [] if item.get("type") == "message" else []:
            if isinstance(part, Mapping) and part.get("type") == "refusal":
                return None, "dropped_refusal"
    text = response_text(response)
    return (text, None) if text is not None else (None, "dropped_no_answer")


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    """A Responses request's function tools in chat's shape."""
    out = []
    for tool in tools or []:
        if isinstance(tool, Mapping) and tool.get("type") == "function":
            keys = ("name", "description", "parameters", "strict")
            function = {k: tool[k] for k in keys if tool.get(k) is not None}
            out.append({"type": "function", "function": function})
    return out


def fine_tuning_example(
    request: Mapping[str, Any],
    response: Mapping[str, Any],
    lookup: Callable[[str], Turn | None],
) -> dict[str, Any] | None:
    """A logged Responses exchange in the chat fine-tuning format (``messages``, the answer
    last; ``tools``); None when it cannot be read as chat."""
    messages = exchange_messages(request, lookup)
    if messages is None:
        return None
    calls = [i for i in output_items(response) if i.get("type") == "function_call"]
    if calls:
        answer = chat_messages(None, calls)
        if not answer:
            return None
        messages += answer
    else:
        text = response_text(response)
        if text is None:
            return None
        messages.append({"role": "assistant", "content": text})
    example: dict[str, Any] = {"messages": messages}
    tools = chat_tools(request.get("tools"))
    if tools:
        example["tools"] = tools
    if request.get("parallel_tool_calls") is not None:
        example["parallel_tool_calls"] = request["parallel_tool_calls"]
    return example


def requested_format(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Responses request's ``text.format`` as chat's ``response_format`` (None for text)."""
    text = request.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") == "json_schema":
        spec = {k: v for k, v in fmt.items() if k != "type"}
        return {"type": "json_schema", "json_schema": spec}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    return None
