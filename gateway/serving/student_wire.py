"""Student requests and answers in OpenAI's wire shape.

A student answer is dressed exactly like a teacher's ``chat.completion`` (or a stream of
``chat.completion.chunk`` events) and names the model the client asked for; the response headers
say who really answered.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from understudy.gateway.protocol import ChatCompletionRequest
from understudy.student.base import StudentAnswer, StudentModel, StudentRequest
from understudy.student.config import StudentConfig


def unsupported_reason(
    endpoint: str, req: Any, body: Mapping[str, Any], settings: StudentConfig
) -> str | None:
    """Why the student must not try this request (None: it may)."""
    if endpoint != "chat.completions":
        return "the student serves chat completions only"
    assert isinstance(req, ChatCompletionRequest)
    if (req.n or 1) > 1:
        return "n > 1"
    if req.tools and not settings.tools:
        return "tools requested and the student has no tool support"
    if req.logprobs:
        return "logprobs requested"
    for message in req.messages:
        if isinstance(message.content, list) and any(
            isinstance(p, dict) and p.get("type") not in (None, "text") for p in message.content
        ):
            return "non-text content (images, audio or files)"
    return None


def student_request(
    model: StudentModel,
    req: ChatCompletionRequest,
    body: Mapping[str, Any],
    settings: StudentConfig,
) -> StudentRequest:
    """The student answers greedily: its confidence is calibrated on greedy answers."""
    asked = req.max_completion_tokens or req.max_tokens or settings.max_tokens
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    messages = [_plain_message(m) for m in body.get("messages") or []]
    return StudentRequest(
        model=model,
        messages=messages,
        max_tokens=min(asked, settings.max_tokens),
        temperature=0.0,
        stop=stop,
        seed=req.seed,
    )


def _plain_message(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    out = {"role": message.get("role"), "content": content or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out


def completion_body(answer: StudentAnswer, requested_model: str, version: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": requested_model,
        "system_fingerprint": f"understudy-{version}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": _usage(answer),
    }


def completion_events(
    answer: StudentAnswer, requested_model: str, version: str, include_usage: bool
) -> list[bytes]:
    """The answer as SSE chunks, one per generated token, then ``[DONE]``."""
    base = {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": requested_model,
        "system_fingerprint": f"understudy-{version}",
    }
    extra = {"usage": None} if include_usage else {}

    def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
        return (
            b"data: "
            + msgspec.json.encode({**base, "choices": choices, **extra, **more})
            + (b"\n\n")
        )

    pieces = _pieces(answer)
    events = [
        event(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
    ]
    events += [
        event([{"index": 0, "delta": {"content": p}, "logprobs": None, "finish_reason": None}])
        for p in pieces
    ]
    events.append(
        event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": answer.finish_reason}])
    )
    if include_usage:
        events.append(
            b"data: "
            + msgspec.json.encode({**base, "choices": [], "usage": _usage(answer)})
            + b"\n\n"
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _pieces(answer: StudentAnswer) -> list[str]:
    """Split the text along its tokens when they add up to it, else in one piece."""
    if answer.tokens and "".join(answer.tokens) == answer.text:
        return [t for t in answer.tokens if t]
    return [answer.text] if answer.text else []


def _usage(answer: StudentAnswer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def answer_text(response: Mapping[str, Any]) -> str | None:
    """The first choice's text of a teacher answer (chat or completions)."""
    choices = response.get("choices") or []
    if not choices:
        return None
    first = choices[0]
    if "message" in first:
        message = first["message"] or {}
        if message.get("tool_calls"):
            return msgspec.json.encode(message["tool_calls"]).decode()
        return message.get("content")
    return first.get("text")
