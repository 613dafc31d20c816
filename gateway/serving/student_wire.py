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
from msgspec import UNSET, UnsetType

from understudy.gateway.errors import DONE_EVENT
from understudy.gateway.protocol import ChatCompletionRequest, ChatMessage, WireRequest
from understudy.student.base import StudentAnswer, StudentModel, StudentRequest
from understudy.student.config import StudentConfig
from understudy.student.conversation import response_text


def unsupported_reason(endpoint: str, req: WireRequest, settings: StudentConfig) -> str | None:
    """Why the student must not try this request (None: it may)."""
    if endpoint != "chat.completions" or not isinstance(req, ChatCompletionRequest):
        return "the student serves chat completions only"
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
    model: StudentModel, req: ChatCompletionRequest, settings: StudentConfig
) -> StudentRequest:
    """The student answers greedily: its confidence is calibrated on greedy answers."""
    asked = req.max_completion_tokens or req.max_tokens or settings.max_tokens
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return StudentRequest(
        model=model,
        messages=[_plain_message(m) for m in req.messages],
        max_tokens=min(asked, settings.max_tokens),
        temperature=0.0,
        stop=stop,
        seed=req.seed,
    )


def _plain_message(message: ChatMessage) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    out: dict[str, Any] = {"role": message.role, "content": content or ""}
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    return out


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str
    refusal: str | None = None


class Choice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[Choice]
    usage: Usage


class Delta(msgspec.Struct):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType | None = UNSET  # present (null until the last chunk) on request


def completion_body(answer: StudentAnswer, requested_model: str, version: str) -> ChatCompletion:
    return ChatCompletion(
        id="chatcmpl-" + secrets.token_hex(12),
        created=int(time.time()),
        model=requested_model,
        system_fingerprint=f"understudy-{version}",
        choices=[
            Choice(
                message=AssistantMessage(content=answer.text), finish_reason=answer.finish_reason
            )
        ],
        usage=_usage(answer),
    )


def completion_events(
    answer: StudentAnswer, requested_model: str, version: str, include_usage: bool
) -> list[bytes]:
    """The answer as SSE chunks, one per generated token, then ``[DONE]``."""
    chunk_id = "chatcmpl-" + secrets.token_hex(12)
    created = int(time.time())
    pending_usage: UnsetType | None = None if include_usage else UNSET

    def event(choices: list[ChunkChoice], usage: Usage | UnsetType | None) -> bytes:
        chunk = ChatCompletionChunk(
            id=chunk_id,
            created=created,
            model=requested_model,
            system_fingerprint=f"understudy-{version}",
            choices=choices,
            usage=usage,
        )
        return b"data: " + msgspec.json.encode(chunk) + b"\n\n"

    deltas = [Delta(role="assistant", content="")] + [Delta(content=p) for p in pieces(answer)]
    events = [event([ChunkChoice(delta=d)], pending_usage) for d in deltas]
    last = ChunkChoice(delta=Delta(), finish_reason=answer.finish_reason)
    events.append(event([last], pending_usage))
    if include_usage:
        events.append(event([], _usage(answer)))
    events.append(DONE_EVENT)
    return events


def pieces(answer: StudentAnswer) -> list[str]:
    """Split the text along its tokens when they add up to it, else in one piece."""
    if answer.tokens and "".join(answer.tokens) == answer.text:
        return [t for t in answer.tokens if t]
    return [answer.text] if answer.text else []


def _usage(answer: StudentAnswer) -> Usage:
    return Usage(
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        total_tokens=answer.prompt_tokens + answer.completion_tokens,
    )


def answer_text(response: Mapping[str, Any]) -> str | None:
    """The first choice's text of a teacher answer (chat or completions; a Responses answer's
    text, function calls as JSON)."""
    if response.get("object") == "response":
        return response_text(response)
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
