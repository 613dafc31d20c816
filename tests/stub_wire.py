"""OpenAI wire shapes for the stand-in teacher: request checks, ``chat.completion`` and
``text_completion`` objects, and the SSE events of their streams."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from tests.stub_answers import Choice, chat_logprobs, text_logprobs, usage

DONE = b"data: [DONE]\n\n"
_encode = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class Reply:
    """What every object of one response shares."""

    id: str
    created: int
    model: str
    fingerprint: str
    new_call_id: Callable[[], str]


@dataclass(frozen=True, slots=True)
class Problem:
    """A request OpenAI would refuse with a 400."""

    message: str
    param: str | None = None
    code: str | None = None


def check_request(body: Any, chat: bool) -> Problem | None:
    """The few checks OpenAI makes that a gateway could trip over; None when the body is fine."""
    if not isinstance(body, dict):
        return Problem("We could not parse the JSON body of your request. Expected a JSON object.")
    if not isinstance(body.get("model"), str):
        return Problem("you must provide a model parameter")
    field = "messages" if chat else "prompt"
    value = body.get(field)
    if value is None:
        return Problem(
            f"Missing required parameter: '{field}'.", field, "missing_required_parameter"
        )
    if chat and not isinstance(value, list):
        return Problem(f"Invalid type for '{field}': expected an array.", field, "invalid_type")
    if chat and not value:
        return Problem(f"Invalid '{field}': empty array.", field, "empty_array")
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        return Problem("Invalid value for 'n': expected an integer from 1 to 128.", "n")
    if body.get("stream_options") is not None and not body.get("stream"):
        return Problem(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    return None


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


def _top(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _wants_chat_logprobs(body: Mapping[str, Any]) -> bool:
    return body.get("logprobs") is True


def _wants_text_logprobs(body: Mapping[str, Any]) -> bool:
    value = body.get("logprobs")
    return isinstance(value, int) and not isinstance(value, bool)


def _completion_tokens(choices: Sequence[Choice]) -> int:
    return sum(c.tokens for c in choices)


# -- chat --------------------------------------------------------------------------------------


def chat_completion(
    reply: Reply, choices: Sequence[Choice], body: Mapping[str, Any], prompt_tokens: int
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    logprobs, top = _wants_chat_logprobs(body), _top(body.get("top_logprobs"))
    out = []
    for index, choice in enumerate(choices):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if choice.tool_calls else choice.text,
            "refusal": None,
            "annotations": [],
        }
        if choice.tool_calls:
            message["tool_calls"] = [
                {
                    "id": reply.new_call_id(),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in choice.tool_calls
            ]
        lp = chat_logprobs(choice.pieces, top) if logprobs and not choice.tool_calls else None
        out.append(
            {
                "index": index,
                "message": message,
                "logprobs": lp,
                "finish_reason": choice.finish_reason,
            }
        )
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": out,
        "usage": usage(prompt_tokens, _completion_tokens(choices)),
        "service_tier": "default",
        "system_fingerprint": reply.fingerprint,
    }


def chat_events(
    reply: Reply, choices: Sequence[Choice], body: Mapping[str, Any], prompt_tokens: int
) -> list[bytes]:
    """The SSE events of a streamed chat completion, ``[DONE]`` last. Choices interleave."""
    head = {
        "id": reply.id,
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": reply.model,
        "service_tier": "default",
        "system_fingerprint": reply.fingerprint,
    }
    logprobs, top = _wants_chat_logprobs(body), _top(body.get("top_logprobs"))
    per_choice = [
        _chat_deltas(reply, index, choice, logprobs, top) for index, choice in enumerate(choices)
    ]
    return _events(head, _interleave(per_choice), body, prompt_tokens, choices)


def _chat_deltas(
    reply: Reply, index: int, choice: Choice, logprobs: bool, top: int
) -> list[dict[str, Any]]:
    def step(delta: dict[str, Any], lp: Any = None, finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}

    if not choice.tool_calls:
        steps = [step({"role": "assistant", "content": "", "refusal": None})]
        for piece in choice.pieces:
            lp = chat_logprobs((piece,), top) if logprobs else None
            steps.append(step({"content": piece}, lp))
        return [*steps, step({}, finish=choice.finish_reason)]
    steps = []
    for position, call in enumerate(choice.tool_calls):
        start = {
            "index": position,
            "id": reply.new_call_id(),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        first = {"tool_calls": [start]}
        if position == 0:  # OpenAI opens a tool-call answer with the role and no content
            first = {"role": "assistant", "content": None, **first, "refusal": None}
        steps.append(step(first))
        for fragment in call.fragments:
            part = {"index": position, "function": {"arguments": fragment}}
            steps.append(step({"tool_calls": [part]}))
    return [*steps, step({}, finish=choice.finish_reason)]


# -- legacy completions ------------------------------------------------------------------------


def text_completion(
    reply: Reply,
    choices: Sequence[Choice],
    body: Mapping[str, Any],
    prompt_tokens: int,
    offsets: Sequence[int],
) -> dict[str, Any]:
    """A ``text_completion`` object; ``offsets`` is each choice's prompt length."""
    logprobs, top = _wants_text_logprobs(body), _top(body.get("logprobs"))
    out = [
        {
            "text": choice.text,
            "index": index,
            "logprobs": text_logprobs(choice.pieces, top, offsets[index]) if logprobs else None,
            "finish_reason": choice.finish_reason,
        }
        for index, choice in enumerate(choices)
    ]
    return {
        "id": reply.id,
        "object": "text_completion",
        "created": reply.created,
        "model": reply.model,
        "choices": out,
        "usage": usage(prompt_tokens, _completion_tokens(choices)),
    }


def text_events(
    reply: Reply,
    choices: Sequence[Choice],
    body: Mapping[str, Any],
    prompt_tokens: int,
    offsets: Sequence[int],
) -> list[bytes]:
    """The SSE events of a streamed legacy completion, ``[DONE]`` last."""
    head = {
        "id": reply.id,
        "object": "text_completion",
        "created": reply.created,
        "model": reply.model,
    }
    logprobs, top = _wants_text_logprobs(body), _top(body.get("logprobs"))
    per_choice = []
    for index, choice in enumerate(choices):
        steps, offset = [], offsets[index]
        for piece in choice.pieces:
            lp = text_logprobs((piece,), top, offset) if logprobs else None
            steps.append({"text": piece, "index": index, "logprobs": lp, "finish_reason": None})
            offset += len(piece)
        end = {"text": "", "index": index, "logprobs": None, "finish_reason": choice.finish_reason}
        per_choice.append([*steps, end])
    return _events(head, _interleave(per_choice), body, prompt_tokens, choices)


# -- shared ------------------------------------------------------------------------------------


def _events(
    head: dict[str, Any],
    steps: Iterator[dict[str, Any]],
    body: Mapping[str, Any],
    prompt_tokens: int,
    choices: Sequence[Choice],
) -> list[bytes]:
    """One ``data:`` event per choice step (``usage: null`` on each when usage was asked), the
    usage chunk with ``choices: []`` if asked, then ``[DONE]``."""
    include_usage = _include_usage(body)
    prefix = b"data: " + _encode(head)[:-1] + b',"choices":['
    suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
    events = [prefix + _encode(s) + suffix for s in steps]
    if include_usage:
        last = {**head, "choices": [], "usage": usage(prompt_tokens, _completion_tokens(choices))}
        events.append(b"data: " + _encode(last) + b"\n\n")
    events.append(DONE)
    return events


def _interleave(lists: Sequence[Sequence[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Round-robin over the choices, as a server generating them side by side sends them."""
    longest = max((len(x) for x in lists), default=0)
    for position in range(longest):
        for steps in lists:
            if position < len(steps):
                yield steps[position]
