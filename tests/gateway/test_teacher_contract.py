"""The teacher's answer held to its contract at the edge: shapes, sizes, encodings, secrets."""

from __future__ import annotations

import gzip
import zlib

import pytest

from understudy.gateway.errors import UpstreamError
from understudy.gateway.teacher.body import STEP, AnswerTooLarge, BodyDecoder
from understudy.gateway.teacher.contract import (
    TeacherContractError,
    check_answer,
    check_part,
    endpoint_of,
)
from understudy.gateway.teacher.redact import REDACTED, Redactor

CHAT = (
    b'{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":'
    b'{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)


def test_a_valid_answer_of_each_endpoint_passes_with_unknown_fields():
    assert check_answer("chat.completions", CHAT)["choices"][0]["message"]["content"] == "hi"
    text = b'{"choices":[{"text":"x","index":0,"logprobs":null}],"extra":{"a":1}}'
    assert check_answer("completions", text)["extra"] == {"a": 1}
    response = b'{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":1}}'
    assert check_answer("responses", response)["id"] == "resp_1"
    assert check_part("responses", b'{"type":"response.output_text.delta","delta":"a"}')
    assert endpoint_of("/chat/completions") == "chat.completions"
    assert endpoint_of("/responses") == "responses" and endpoint_of("/models") is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (CHAT.replace(b'"prompt_tokens":3', b'"prompt_tokens":"12"'), "usage.prompt_tokens"),
        (CHAT.replace(b'"total_tokens":4', b'"total_tokens":{}'), "usage.total_tokens"),
        (CHAT.replace(b'"prompt_tokens":3', b'"prompt_tokens":' + b"1" * 21), "prompt_tokens"),
        (CHAT.replace(b'"model":"m"', b'"model":{}'), "$.model"),
        (CHAT.replace(b'"content":"hi"', b'"content":5'), "content"),
        (b"<html><body>OK</body></html>", "not JSON"),
        (b"[1, 2, 3]", "JSON list"),
        (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deeper than"),
        (b'{"a":' + b"[" * 200 + b"]" * 200 + b"}", "deeper than"),
        (b'{"model":"m"}', "choices"),
    ],
    ids=[
        "tokens-a-string",
        "tokens-an-object",
        "tokens-beyond-2-53",
        "model-an-object",
        "content-a-number",
        "html",
        "array",
        "100k-deep",
        "200-deep",
        "no-choices",
    ],
)
def test_an_answer_outside_the_contract_is_refused(content, says):
    with pytest.raises(TeacherContractError) as info:
        check_answer("chat.completions", content)
    assert says in info.value.message
    assert info.value.status_code == 502 and info.value.code == "teacher_unavailable"


def test_a_gzip_bomb_is_inflated_one_step_at_a_time_and_refused_past_the_limit():
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"0" * (1024 * 1024)
    bomb = b"".join(squeezer.compress(block) for _ in range(64)) + squeezer.flush()
    assert len(bomb) < 100 * 1024  # 64 MiB in under 100 KiB
    decoder = BodyDecoder("gzip", limit=8 * 1024 * 1024)
    taken = 0
    with pytest.raises(AnswerTooLarge):
        for piece in decoder.feed(bomb):
            assert len(piece) <= STEP  # never more than one step held
            taken += len(piece)
    assert taken <= 8 * 1024 * 1024


def test_gzip_and_deflate_decode_and_an_unasked_encoding_is_refused():
    body = b'{"a": 1}' * 1000
    assert b"".join(BodyDecoder("gzip", 1 << 20).feed(gzip.compress(body))) == body
    assert b"".join(BodyDecoder("deflate", 1 << 20).feed(zlib.compress(body))) == body
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw_deflate = raw.compress(body) + raw.flush()
    assert b"".join(BodyDecoder("deflate", 1 << 20).feed(raw_deflate)) == body
    with pytest.raises(UpstreamError, match="encoding"):
        BodyDecoder("br", 1 << 20)
    with pytest.raises(AnswerTooLarge):
        list(BodyDecoder(None, 10).feed(b"x" * 11))


def test_known_secrets_and_the_client_key_are_redacted_short_values_are_not():
    redactor = Redactor(["sk-teacher-SECRET-7f3a9c", "gw-key-0123456789", None, "short"])
    text = b"echo: Bearer sk-client-abcdef123456 sk-teacher-SECRET-7f3a9c gw-key-0123456789 short"
    out = redactor.bytes(text, "Bearer sk-client-abcdef123456")
    assert b"sk-client" not in out and b"SECRET" not in out and b"gw-key" not in out
    assert out.count(REDACTED.encode()) == 3 and out.endswith(b"short")
    assert redactor.text("Bearer x and x", "Bearer x") == "Bearer x and x"
