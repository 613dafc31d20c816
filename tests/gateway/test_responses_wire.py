"""What a Responses request lets the student do, and a served answer's wire shape (checked
against the official SDK's types and its stream helper's state machine)."""

import msgspec
import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from understudy.gateway.protocol import validate_responses
from understudy.gateway.serving import responses_wire as wire
from understudy.student.base import StudentAnswer
from understudy.student.config import StudentConfig


def answer(text: str, finish: str = "stop") -> StudentAnswer:
    tokens = [text[:2], text[2:]] if len(text) > 2 else [text]
    return StudentAnswer(text, [1, 2], tokens, [-0.1, -0.1], [[], []], finish, 7, 2, 3.0)


def req(**fields):
    return validate_responses({"model": "m", "input": "hi", **fields})


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"tools": [{"type": "web_search_preview"}]}, wire.BUILT_IN_TOOLS),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, wire.BUILT_IN_TOOLS),
        ({"tools": [{"type": "code_interpreter"}]}, wire.BUILT_IN_TOOLS),
        ({"background": True}, "background responses are the teacher's"),
        ({"conversation": "conv_1"}, "a server-side conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "a stored prompt template"),
        ({"tools": [{"type": "function", "name": "f"}]}, "tools requested"),
        ({"top_logprobs": 2}, "logprobs requested"),
        ({"tool_choice": "required"}, "a tool call is required"),
    ],
)
def test_requests_the_student_may_not_answer(fields, reason):
    assert wire.unsupported_reason(req(**fields), StudentConfig()).startswith(reason)


def test_a_plain_request_and_function_tools_with_tool_support_may_be_answered():
    assert wire.unsupported_reason(req(), StudentConfig()) is None
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    assert wire.unsupported_reason(req(tools=tools), StudentConfig(tools=True)) is None


def test_router_fields_are_chats_response_format_and_tools():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "name": "x", "schema": schema}
    tools = [{"type": "function", "name": "f", "parameters": schema}]
    fields = wire.router_fields(req(text={"format": fmt}, tools=tools))
    assert fields["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": schema},
    }
    assert fields["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": schema}}
    ]


def test_function_calls_are_read_from_a_json_answer_only_when_functions_are_offered():
    tools = [{"type": "function", "name": "f"}]
    text = '[{"name": "f", "arguments": {"a": 1}}]'
    assert wire.function_calls(text, req(tools=tools)) == [
        {"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert wire.function_calls(text, req()) is None
    assert wire.function_calls("plain words", req(tools=tools)) is None


def test_a_served_response_is_the_sdks_response_and_its_events_pass_the_stream_helper():
    request = req(instructions="be brief", metadata={"k": "v"})
    response = wire.response_object(answer("hello"), request, None, "resp_x")
    parsed = Response.model_validate(msgspec.to_builtins(response))
    assert parsed.output_text == "hello" and parsed.status == "completed"
    assert parsed.usage.input_tokens == 7 and parsed.usage.output_tokens == 2
    assert parsed.instructions == "be brief" and parsed.metadata == {"k": "v"}

    state = ResponseStreamState(input_tools=omit, text_format=omit)
    adapter = TypeAdapter(ResponseStreamEvent)
    events = wire.response_events(response, ["he", "llo"])
    numbers = []
    for raw in events:
        head, data = raw.split(b"\ndata: ")
        event = adapter.validate_json(data)
        assert head == b"event: " + event.type.encode()
        numbers.append(event.sequence_number)
        state.handle_event(event)
    assert numbers == list(range(len(events)))
    assert event.type == "response.completed" and event.response.output_text == "hello"


def test_function_calls_and_a_truncated_answer_have_their_shapes():
    tools = [{"type": "function", "name": "f"}]
    calls = wire.function_calls('[{"name": "f", "arguments": "{}"}]', req(tools=tools))
    response = wire.response_object(answer("x"), req(tools=tools), calls, "resp_y")
    parsed = Response.model_validate(msgspec.to_builtins(response))
    (call,) = parsed.output
    assert call.type == "function_call" and call.name == "f" and call.id.startswith("fc_")
    kinds = [e.split(b"\n")[0] for e in wire.response_events(response, [])]
    assert b"event: response.function_call_arguments.done" in kinds

    cut = wire.response_object(answer("xyz", "length"), req(), None, "resp_z")
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert wire.response_events(cut, ["xyz"])[-1].startswith(b"event: response.incomplete")
