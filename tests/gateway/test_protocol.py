import pytest

from understudy.gateway.errors import InvalidRequestError
from understudy.gateway.protocol import decode_body, validate_chat, validate_completion


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"[1,2]", b'"text"', b"\xff\xfe"])
def test_bodies_that_are_not_json_objects(raw):
    with pytest.raises(InvalidRequestError):
        decode_body(raw)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages.0"),
        ({"model": "m", "messages": [{"role": "user"}], "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": [{"role": "user"}], "temperature": 3}, "temperature"),
        ({"model": "m", "messages": [{"role": "user"}], "n": 0}, "n"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}, "stream"),
        ({"model": 5, "messages": [{"role": "user"}]}, "model"),
    ],
)
def test_chat_validation_names_the_param(body, param):
    with pytest.raises(InvalidRequestError) as info:
        validate_chat(body)
    assert info.value.param == param
    assert info.value.status_code == 400


def test_valid_chat_keeps_unknown_fields_out_of_the_way():
    req = validate_chat(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 1,
            "some_vendor_field": {"a": 1},
            "stream_options": {"include_usage": True},
        }
    )
    assert req.temperature == 1.0 and req.stream_options.include_usage is True


def test_completion_needs_prompt():
    with pytest.raises(InvalidRequestError) as info:
        validate_completion({"model": "m"})
    assert info.value.param == "prompt"
    assert validate_completion({"model": "m", "prompt": "x"}).prompt == "x"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"m","messages":[],"extra":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x","o":'
        + b'{"a":' * 1000
        + b"1"
        + b"}" * 1000
        + b"}]}]}",
        b'{"x":' + b"[" * 200 + b"]" * 200 + b"}",
    ],
    ids=["100k-arrays", "1000-objects-in-a-part", "200-levels"],
)
def test_deeply_nested_bodies_are_a_400_not_a_recursion_error(raw):
    with pytest.raises(InvalidRequestError, match="deeper than 128"):
        decode_body(raw)


def test_nesting_up_to_the_limit_is_accepted():
    body = decode_body(b'{"x":' + b"[" * 127 + b"]" * 127 + b"}")
    assert "x" in body
