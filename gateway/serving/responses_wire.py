"""Student answers in the Responses API's wire shape, and what a Responses request lets the
student do.

A served answer is a whole ``response`` object (an output message with ``output_text``, or
``function_call`` items) with ids the gateway issues (``resp_``, ``msg_``, ``fc_``), or, streamed,
the typed event sequence OpenAI sends (``response.created`` ... ``response.completed``, each
with its ``sequence_number``). It names the model the client asked for.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from understudy.gateway.protocol import ResponsesRequest
from understudy.student.base import StudentAnswer, StudentModel, StudentRequest
from understudy.student.config import StudentConfig
from understudy.student.conversation import chat_tools, requested_format

BUILT_IN_TOOLS = "built-in tools (web or file search, code interpreter, computer use, MCP, ...)"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def unsupported_reason(req: ResponsesRequest, settings: StudentConfig) -> str | None:
    """Why the student must not try this Responses request (None: it may)."""
    if req.background:
        return "background responses are the teacher's"
    if req.conversation is not None:
        return "a server-side conversation"
    if req.prompt is not None:
        return "a stored prompt template"
    tools = req.tools or []
    if any(not isinstance(t, Mapping) or t.get("type") != "function" for t in tools):
        return BUILT_IN_TOOLS
    if tools and not settings.tools:
        return "tools requested and the student has no tool support"
    if isinstance(req.tool_choice, Mapping) or req.tool_choice == "required":
        return "a tool call is required"
    if req.top_logprobs or any("logprobs" in str(i) for i in req.include or []):
        return "logprobs requested"
    return None


def student_request(
    model: StudentModel,
    req: ResponsesRequest,
    messages: list[dict[str, Any]],
    settings: StudentConfig,
) -> StudentRequest:
    """The student answers greedily: its confidence is calibrated on greedy answers."""
    asked = req.max_output_tokens or settings.max_tokens
    return StudentRequest(
        model=model,
        messages=messages,
        max_tokens=min(asked, settings.max_tokens),
        temperature=0.0,
    )


def router_fields(req: ResponsesRequest) -> dict[str, Any]:
    """The request's output format and function tools in chat's shape, which the router's
    validity checks read (``response_format``, ``tools``)."""
    request = {"text": req.text, "tools": req.tools}
    fields: dict[str, Any] = {}
    response_format = requested_format(request)
    if response_format is not None:
        fields["response_format"] = response_format
    tools = chat_tools(req.tools)
    if tools:
        fields["tools"] = tools
    return fields


def function_calls(text: str, req: ResponsesRequest) -> list[dict[str, Any]] | None:
    """The function calls a student answer makes, in chat's ``tool_calls`` shape: an answer
    that is a JSON list of ``{"name", "arguments"}`` (how the log renders a call) when the
    request offers functions; None for a text answer."""
    if not req.tools or not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not value:
        return None
    calls = []
    for entry in value:
        spec = entry.get("function", entry) if isinstance(entry, dict) else None
        if not isinstance(spec, dict) or "name" not in spec:
            return None
        arguments = spec.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        function = {"name": spec["name"], "arguments": arguments}
        calls.append({"type": "function", "function": function})
    return calls


# -- the response object -----------------------------------------------------------------


class OutputText(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class OutputMessage(msgspec.Struct, tag="message", tag_field="type"):
    id: str
    status: str
    content: list[OutputText]
    role: str = "assistant"


class FunctionCall(msgspec.Struct, tag="function_call", tag_field="type"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: str


OutputItem = OutputMessage | FunctionCall


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(msgspec.Struct):
    reason: str


class ResponseObject(msgspec.Struct, kw_only=True):
    id: str
    object: str = "response"
    created_at: int
    status: str
    background: bool = False
    error: None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: Any = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"effort": None, "summary": None}
    )
    service_tier: str = "default"
    store: bool = True
    temperature: float = 1.0
    text: dict[str, Any] = msgspec.field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: Any = "auto"
    tools: list[Any] = msgspec.field(default_factory=list)
    top_p: float = 1.0
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


def response_object(
    answer: StudentAnswer,
    req: ResponsesRequest,
    calls: list[dict[str, Any]] | None,
    response_id: str,
) -> ResponseObject:
    """The student's whole answer as a completed (or, cut by the token limit, incomplete)
    ``response``."""
    complete = answer.finish_reason != "length"
    status = "completed" if complete else "incomplete"
    output: list[OutputItem]
    if calls:
        output = [
            FunctionCall(
                id=new_id("fc"),
                call_id="call_" + secrets.token_hex(12),
                name=c["function"]["name"],
                arguments=c["function"]["arguments"],
                status="completed",
            )
            for c in calls
        ]
    else:
        output = [OutputMessage(id=new_id("msg"), status=status, content=[OutputText(answer.text)])]
    return ResponseObject(
        id=response_id,
        created_at=int(time.time()),
        status=status,
        incomplete_details=None if complete else IncompleteDetails("max_output_tokens"),
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        model=req.model,
        output=output,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        previous_response_id=req.previous_response_id,
        store=req.stored,
        temperature=1.0 if req.temperature is None else req.temperature,
        text=req.text or {"format": {"type": "text"}},
        tool_choice=req.tool_choice or "auto",
        tools=list(req.tools or []),
        top_p=1.0 if req.top_p is None else req.top_p,
        usage=ResponseUsage(
            input_tokens=answer.prompt_tokens,
            input_tokens_details=InputTokensDetails(),
            output_tokens=answer.completion_tokens,
            output_tokens_details=OutputTokensDetails(),
            total_tokens=answer.prompt_tokens + answer.completion_tokens,
        ),
        user=req.user,
        metadata=dict(req.metadata or {}),
    )


# -- the stream --------------------------------------------------------------------------


class _Events:
    """Typed events, numbered as they are made."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def add(self, kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(self.out), **fields}
        self.out.append(
            b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
        )


def response_events(response: ResponseObject, pieces: list[str]) -> list[bytes]:
    """The whole typed event sequence of a served ``response``; its text in ``pieces``."""
    events = _Events()
    opening = msgspec.structs.replace(
        response, status="in_progress", output=[], usage=None, incomplete_details=None
    )
    events.add("response.created", response=opening)
    events.add("response.in_progress", response=opening)
    for index, item in enumerate(response.output):
        if isinstance(item, OutputMessage):
            _message_events(events, index, item, pieces)
        else:
            _call_events(events, index, item)
    terminal = "response.completed" if response.status == "completed" else "response.incomplete"
    events.add(terminal, response=response)
    return events.out


def _message_events(events: _Events, index: int, item: OutputMessage, pieces: list[str]) -> None:
    text = item.content[0].text
    where = {"item_id": item.id, "output_index": index, "content_index": 0}
    events.add(
        "response.output_item.added",
        output_index=index,
        item=msgspec.structs.replace(item, status="in_progress", content=[]),
    )
    events.add("response.content_part.added", **where, part=OutputText(""))
    for piece in pieces:
        events.add("response.output_text.delta", **where, delta=piece, logprobs=[])
    events.add("response.output_text.done", **where, text=text, logprobs=[])
    events.add("response.content_part.done", **where, part=item.content[0])
    events.add("response.output_item.done", output_index=index, item=item)


def _call_events(events: _Events, index: int, item: FunctionCall) -> None:
    where = {"item_id": item.id, "output_index": index}
    events.add(
        "response.output_item.added",
        output_index=index,
        item=msgspec.structs.replace(item, status="in_progress", arguments=""),
    )
    events.add("response.function_call_arguments.delta", **where, delta=item.arguments)
    events.add(
        "response.function_call_arguments.done", **where, name=item.name, arguments=item.arguments
    )
    events.add("response.output_item.done", output_index=index, item=item)
