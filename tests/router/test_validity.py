import pytest

from understudy.router import CHECK_REASONS, extract_features, failed_check
from understudy.router.validity import requested_schema

SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "ticket",
        "schema": {
            "type": "object",
            "properties": {
                "intent": {"enum": ["refund", "balance"]},
                "urgency": {"type": "integer"},
            },
            "required": ["intent"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "now"}},
]


def call(name, arguments):
    return [{"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}]


def test_plain_text_answer_passes():
    assert failed_check("refund", "stop") is None
    assert failed_check("refund", "stop", {"type": "text"}, TOOLS) is None


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_answer_fails(text):
    assert failed_check(text, "stop") == "empty"


def test_truncated_answer_fails_before_anything_else():
    assert failed_check('{"intent": "ref', "length", SCHEMA_FORMAT) == "truncated"
    assert failed_check("", "length") == "truncated"


def test_json_object_format():
    fmt = {"type": "json_object"}
    assert failed_check('{"a": 1}', "stop", fmt) is None
    assert failed_check('{"a": 1', "stop", fmt) == "invalid_json"
    assert failed_check("sure! {}", "stop", fmt) == "invalid_json"
    assert failed_check("[1, 2]", "stop", fmt) == "schema_mismatch"


def test_json_schema_format():
    assert failed_check('{"intent": "refund", "urgency": 2}', "stop", SCHEMA_FORMAT) is None
    assert failed_check('{"intent": "refund"', "stop", SCHEMA_FORMAT) == "invalid_json"
    assert failed_check('{"intent": "cancel"}', "stop", SCHEMA_FORMAT) == "schema_mismatch"
    assert failed_check('{"urgency": 2}', "stop", SCHEMA_FORMAT) == "schema_mismatch"
    extra = '{"intent": "refund", "note": "x"}'
    assert failed_check(extra, "stop", SCHEMA_FORMAT) == "schema_mismatch"
    assert failed_check('{"intent": "refund", "urgency": "high"}', "stop", SCHEMA_FORMAT) == (
        "schema_mismatch"
    )


def test_json_schema_format_without_a_schema_only_needs_json():
    fmt = {"type": "json_schema", "json_schema": {"name": "x"}}
    assert failed_check("[1]", "stop", fmt) is None
    assert failed_check("nope", "stop", fmt) == "invalid_json"


def test_requested_schema_only_for_json_schema_formats():
    assert requested_schema(SCHEMA_FORMAT) is SCHEMA_FORMAT["json_schema"]["schema"]
    assert requested_schema({"type": "json_object"}) is None
    assert requested_schema({"type": "json_schema", "json_schema": {"schema": "x"}}) is None
    assert requested_schema(None) is None


def test_tool_call_to_a_provided_tool_with_valid_arguments_passes():
    assert (
        failed_check("", "tool_calls", None, TOOLS, call("get_weather", '{"city": "Oslo"}')) is None
    )
    assert (
        failed_check("", "tool_calls", None, TOOLS, call("get_weather", {"city": "Oslo"})) is None
    )
    assert failed_check("", "tool_calls", None, TOOLS, call("now", "{}")) is None


def test_tool_call_naming_an_unknown_tool_fails():
    assert failed_check("", "tool_calls", None, TOOLS, call("send_email", "{}")) == "unknown_tool"
    assert failed_check("", "tool_calls", None, None, call("now", "{}")) == "unknown_tool"
    assert failed_check("", "tool_calls", None, TOOLS, [{"type": "function"}]) == "unknown_tool"


@pytest.mark.parametrize(
    "arguments",
    ['{"city": ', '{"town": "Oslo"}', '{"city": 42}', '"Oslo"', "[]", None],
)
def test_tool_call_with_bad_arguments_fails(arguments):
    reason = failed_check("", "tool_calls", None, TOOLS, call("get_weather", arguments))
    assert reason == "invalid_tool_arguments"


def test_second_bad_tool_call_is_caught():
    calls = call("now", "{}") + call("get_weather", "{}")
    assert failed_check("", "tool_calls", None, TOOLS, calls) == "invalid_tool_arguments"


def test_tool_call_answer_is_not_checked_as_json_text():
    calls = call("now", "{}")
    assert failed_check("", "tool_calls", SCHEMA_FORMAT, TOOLS, calls) is None


def test_extract_features_carries_the_failed_check():
    f = extract_features([-0.01], [], "not json", "stop", {"type": "json_object"})
    assert not f.valid and f.failed_check == "invalid_json"
    f = extract_features([-0.01], [], "", "tool_calls", None, TOOLS, call("nope", "{}"))
    assert f.failed_check == "unknown_tool"


def test_every_reason_is_listed():
    assert set(CHECK_REASONS) == {
        "truncated",
        "empty",
        "unknown_tool",
        "invalid_tool_arguments",
        "invalid_json",
        "schema_mismatch",
    }
