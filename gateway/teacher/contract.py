"""What the gateway accepts from the teacher, checked once, where its answer comes in.

A whole answer must be a JSON object of its endpoint's shape (a chat completion, a text
completion, a response) and a stream's events chunks or typed events of that shape, with the
types the gateway reads (``model`` a string, token counts integers, ``choices`` a list, ...).
Unknown fields pass as they are. Anything else (HTML, a JSON array, ``usage.prompt_tokens:
"12"``, ``model: {}``, a body nested deeper than :data:`MAX_ANSWER_DEPTH`) is a
:class:`TeacherContractError`: a 502 ``teacher_unavailable`` for the client, an error row in
the log.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from understudy.gateway.errors import UpstreamError
from understudy.gateway.protocol import deeper_than

MAX_TOKENS = 2**53
"""Largest token count taken from the teacher (any real one is far below)."""
MAX_ANSWER_DEPTH = 128
"""Deepest nesting of objects and arrays a teacher answer may have."""

Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]


class TeacherContractError(UpstreamError):
    """The teacher answered something that is not an answer of its API."""


class _Usage(msgspec.Struct):
    prompt_tokens: Tokens | None = None
    completion_tokens: Tokens | None = None
    total_tokens: Tokens | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None
    input_tokens_details: dict[str, Any] | None = None
    output_tokens_details: dict[str, Any] | None = None


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_ToolCall] | None = None
    function_call: _Function | None = None


class _ChatLogprobs(msgspec.Struct):
    content: list[dict[str, Any]] | None = None
    refusal: list[dict[str, Any]] | None = None


class _TextLogprobs(msgspec.Struct):
    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, Any] | None] | None = None
    text_offset: list[int] | None = None


class _ChatChoice(msgspec.Struct):
    index: int = 0
    finish_reason: str | None = None
    message: _Message | None = None
    delta: _Message | None = None
    logprobs: _ChatLogprobs | None = None


class _TextChoice(msgspec.Struct):
    index: int = 0
    finish_reason: str | None = None
    text: str | None = None
    logprobs: _TextLogprobs | None = None


class _Chat(msgspec.Struct):
    choices: list[_ChatChoice]
    id: str | None = None
    object: str | None = None
    created: int | float | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    usage: _Usage | None = None


class _ChatChunk(_Chat):
    choices: list[_ChatChoice] = []


class _Text(msgspec.Struct):
    choices: list[_TextChoice]
    id: str | None = None
    object: str | None = None
    created: int | float | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    usage: _Usage | None = None


class _TextChunk(_Text):
    choices: list[_TextChoice] = []


class _Response(msgspec.Struct):
    id: str | None = None
    object: str | None = None
    model: str | None = None
    status: str | None = None
    output: list[dict[str, Any]] | None = None
    usage: _Usage | None = None
    error: dict[str, Any] | None = None


class _ResponseEvent(msgspec.Struct):
    type: str
    sequence_number: int | None = None
    response: _Response | None = None
    item: dict[str, Any] | None = None
    output_index: int | None = None


_WHOLE: dict[str, tuple[type[msgspec.Struct], str]] = {
    "chat.completions": (_Chat, "chat completion"),
    "completions": (_Text, "text completion"),
    "responses": (_Response, "response"),
}
_PART: dict[str, tuple[type[msgspec.Struct], str]] = {
    "chat.completions": (_ChatChunk, "chat completion chunk"),
    "completions": (_TextChunk, "text completion chunk"),
    "responses": (_ResponseEvent, "Responses API event"),
}
_KINDS = {"/chat/completions": "chat.completions", "/completions": "completions"}


def endpoint_of(path: str) -> str | None:
    """The endpoint whose contract a teacher path answers under (None: any JSON object)."""
    if path in _KINDS:
        return _KINDS[path]
    return "responses" if path == "/responses" else None


def decode_object(content: bytes, what: str = "an answer") -> dict[str, Any]:
    """``content`` as a JSON object no deeper than :data:`MAX_ANSWER_DEPTH`, or raise."""
    try:
        value = msgspec.json.decode(content)
    except msgspec.DecodeError:
        raise TeacherContractError(
            f"the teacher sent {what} that is not JSON: {_snippet(content)}"
        ) from None
    except RecursionError:
        value = None
        deep = True
    else:
        deep = deeper_than(value, MAX_ANSWER_DEPTH)
    if deep:
        raise TeacherContractError(
            f"the teacher sent {what} nested deeper than {MAX_ANSWER_DEPTH} levels"
        )
    if not isinstance(value, dict):
        raise TeacherContractError(
            f"the teacher sent {what} that is a JSON {type(value).__name__}, not an object"
        )
    return value


def check_answer(endpoint: str | None, content: bytes) -> dict[str, Any]:
    """The teacher's whole 200 answer, decoded and checked against ``endpoint``'s shape."""
    answer = decode_object(content)
    if endpoint in _WHOLE:
        _check(answer, *_WHOLE[endpoint])
    return answer


def check_part(endpoint: str, payload: bytes) -> dict[str, Any]:
    """One stream event's data, decoded and checked (an ``error`` object passes as it is)."""
    part = decode_object(payload, "a stream event")
    if "error" not in part or endpoint == "responses":
        _check(part, *_PART[endpoint])
    return part


def _check(value: dict[str, Any], shape: type[msgspec.Struct], name: str) -> None:
    try:
        msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        raise TeacherContractError(f"the teacher's answer is not a valid {name}: {exc}") from None


def _snippet(content: bytes) -> str:
    text = content[:120].decode("utf-8", "replace").strip()
    return repr(text) + ("..." if len(content) > 120 else "")
