"""Wire models for the OpenAI endpoints the gateway serves.

The request body is kept as the client sent it (unknown fields go to the teacher untouched);
these structs only check the types of the fields the gateway understands, so a malformed
request is refused with a precise ``param`` before anything is sent or logged.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from understudy.gateway.errors import InvalidRequestError


class ChatMessage(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Common(msgspec.Struct):
    model: str
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    logprobs: Any = None
    top_logprobs: int | None = None
    metadata: dict[str, Any] | None = None


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = msgspec.field(default_factory=list)
    max_completion_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_Common):
    prompt: str | list[Any] | None = None
    echo: bool | None = None
    suffix: str | None = None


class ResponsesRequest(msgspec.Struct):
    """``POST /v1/responses``: the fields the gateway reads; the rest go to the teacher."""

    model: str
    input: str | list[dict[str, Any]] | None = None
    instructions: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    include: list[str] | None = None
    prompt: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None

    @property
    def stored(self) -> bool:
        """``store`` defaults to true in this API."""
        return self.store is not False


WireRequest = ChatCompletionRequest | CompletionRequest | ResponsesRequest
"""A validated request body, as the pipeline carries it."""

_PATH_RE = re.compile(r"at `\$\.?([^`]*)`")
_Req = TypeVar("_Req", bound=msgspec.Struct)


def decode_body(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object body or raise an OpenAI-shaped 400."""
    if not raw.strip():
        raise InvalidRequestError("the request body is empty; expected a JSON object")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        body = _TOO_DEEP  # deeper than the decoder goes
    if body is _TOO_DEEP or deeper_than(body, MAX_JSON_DEPTH):
        raise InvalidRequestError(
            f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body


MAX_JSON_DEPTH = 128
"""Deepest nesting of objects and arrays a request body may have (OpenAI's JSON schemas nest a
few levels); deeper bodies get 400 before anything recurses over them."""

_TOO_DEEP = object()


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` deep (iterative, no recursion)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def validate_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    req = _convert(body, ChatCompletionRequest)
    if "messages" not in body:
        raise InvalidRequestError("missing required parameter: 'messages'", param="messages")
    if not req.messages:
        raise InvalidRequestError("'messages' must contain at least one message", param="messages")
    _check_common(req)
    return req


def validate_completion(body: dict[str, Any]) -> CompletionRequest:
    req = _convert(body, CompletionRequest)
    if req.prompt is None:
        raise InvalidRequestError("missing required parameter: 'prompt'", param="prompt")
    _check_common(req)
    return req


def validate_responses(body: dict[str, Any]) -> ResponsesRequest:
    req = _convert(body, ResponsesRequest)
    if req.input is None and req.previous_response_id is None and req.prompt is None:
        raise InvalidRequestError("missing required parameter: 'input'", param="input")
    if req.conversation is not None and req.previous_response_id is not None:
        raise InvalidRequestError(
            "'previous_response_id' and 'conversation' cannot be used together",
            param="previous_response_id",
        )
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise InvalidRequestError("'temperature' must be between 0 and 2", param="temperature")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise InvalidRequestError("'top_p' must be between 0 and 1", param="top_p")
    if req.max_output_tokens is not None and req.max_output_tokens < 1:
        raise InvalidRequestError(
            "'max_output_tokens' must be at least 1", param="max_output_tokens"
        )
    return req


def _convert(body: dict[str, Any], model: type[_Req]) -> _Req:
    if "model" not in body:
        raise InvalidRequestError("missing required parameter: 'model'", param="model")
    try:
        return msgspec.convert(body, model)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH_RE.search(text)
        param = match.group(1) if match else None
        if param is not None:
            param = re.sub(r"\[(\d+)\]", r".\1", param).lstrip(".") or None
        raise InvalidRequestError(f"invalid request: {text}", param=param) from None


def _check_common(req: _Common) -> None:
    if req.n is not None and req.n < 1:
        raise InvalidRequestError("'n' must be at least 1", param="n")
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise InvalidRequestError("'temperature' must be between 0 and 2", param="temperature")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise InvalidRequestError("'top_p' must be between 0 and 1", param="top_p")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, name, None)
        if value is not None and value < 1:
            raise InvalidRequestError(f"'{name}' must be at least 1", param=name)
