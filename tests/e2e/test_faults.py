"""Teacher faults and bad input: OpenAI-shaped errors, retries within budget, honest logs."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import GatewayProcess

CHAT = [{"role": "user", "content": "What is 2+2?"}]


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers["x-request-id"].startswith("req_")
    return body["error"]


def story_stream(gateway):
    """A raw streaming request, read event by event (the SDK would hide the wire)."""
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a story."}],
    }
    return httpx.stream("POST", gateway.base_url + "/chat/completions", json=body)


def test_teacher_5xx_is_retried_then_succeeds(gateway, teacher):
    teacher.control(fail_next=[500, 503])
    completion = client(gateway).chat.completions.create(model="m", messages=CHAT)
    assert completion.choices[0].message.content == "4"
    assert len(teacher.requests) == 3


def test_teacher_5xx_beyond_the_budget_is_a_502(gateway, teacher):
    teacher.control(fail_next=[500, 500, 500, 500])
    with pytest.raises(openai.APIStatusError) as info:
        client(gateway).chat.completions.create(model="m", messages=CHAT)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "teacher_unavailable"
    assert len(teacher.requests) == 3  # one try + max_retries (2)
    rows = gateway.wait_rows("http_status = 502")
    assert rows and rows[-1]["status"] == "error" and "500" in rows[-1]["error"]


def test_teacher_4xx_is_passed_through_with_its_body(gateway, teacher):
    teacher.control(fail_next=[400])
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).chat.completions.create(model="m", messages=CHAT)
    assert len(teacher.requests) == 1  # 4xx is never retried
    assert info.value.body["type"] == "invalid_request_error"
    teacher.control(fail_next=[429])
    with pytest.raises(openai.RateLimitError) as info:
        client(gateway).chat.completions.create(model="m", messages=CHAT)
    assert info.value.response.headers.get("retry-after")


def test_teacher_timeout_is_a_504(gateway, teacher):
    teacher.control(delay_ms=10_000)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client(gateway).chat.completions.create(model="m", messages=CHAT)
    assert info.value.status_code == 504
    assert info.value.body["code"] == "teacher_timeout"
    assert time.monotonic() - started < 15  # 3 s timeout, retried within the budget
    teacher.control(reset=True)


def test_teacher_dropping_the_connection_is_retried(gateway, teacher):
    teacher.control(fail_next=["drop"])
    completion = client(gateway).chat.completions.create(model="m", messages=CHAT)
    assert completion.choices[0].message.content == "4"


def test_stream_cut_by_the_teacher_ends_with_an_error_event_then_done(gateway, teacher):
    teacher.control(cut_stream_after=3)
    with story_stream(gateway) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][5:])
    assert error["error"]["type"] == "upstream_error"
    assert len(events) == 3 + 2
    row = gateway.row(request_id)
    assert row["status"] == "cut"
    assert "broke off" in row["error"] or "without [DONE]" in row["error"]
    # The SDK surfaces the error event as an exception.
    teacher.control(cut_stream_after=2)
    with pytest.raises(openai.APIError):
        list(
            client(gateway).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "Tell me a story."}], stream=True
            )
        )


def test_client_disconnect_mid_stream_leaves_an_incomplete_row(gateway, teacher):
    teacher.control(chunk_delay_ms=200)
    with story_stream(gateway) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first event
    row = gateway.row(request_id, timeout=10)
    assert row["status"] == "incomplete"
    teacher.control(reset=True)


def test_streaming_5xx_before_the_first_byte_is_retried(gateway, teacher):
    teacher.control(fail_next=[502])
    chunks = list(
        client(gateway).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Name a colour."}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "blue"


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"", None),
        (b"{not json", None),
        (b"[]", None),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": "hi"}', "messages"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": "two"}', "n"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_logged(gateway, teacher, content, param):
    response = httpx.post(
        gateway.base_url + "/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
    )
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    time.sleep(0.1)  # longer than the commit interval
    assert not gateway.rows("id = ?", (response.headers["x-request-id"],))
    assert not teacher.requests


def test_unknown_route_and_wrong_method(gateway, teacher):
    assert_openai_error(httpx.get(gateway.url + "/v1/nothing-here"), 404)
    assert_openai_error(httpx.get(gateway.base_url + "/chat/completions"), 405)
    assert_openai_error(httpx.delete(gateway.url + "/health"), 405)


def test_body_over_the_limit_is_a_413(stub, tmp_path):
    env = gateway_env(UNDERSTUDY_MAX_BODY_BYTES="2048")
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
        error = assert_openai_error(httpx.post(gw.base_url + "/chat/completions", json=big), 413)
        assert error["code"] == "request_too_large"
        small = {"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}]}
        answered = httpx.post(gw.base_url + "/chat/completions", json=small)
        assert answered.status_code == 200
        # The log is written behind, in order: once the answered request's row is in, the
        # refused one, sent before it, would be too. (A fixed 0.1 s wait found no row at all on
        # a busy machine.)
        gw.row(answered.headers["x-request-id"])
        assert len(gw.rows()) == 1


def test_teacher_unreachable_is_a_502_and_not_ready(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with GatewayProcess(dead, tmp_path / "data", env=gateway_env()) as gw:
        response = httpx.post(
            gw.base_url + "/chat/completions", json={"model": "m", "messages": CHAT}
        )
        assert assert_openai_error(response, 502)["code"] == "teacher_unavailable"
        ready = httpx.get(gw.url + "/ready")
        assert ready.status_code == 503
        assert ready.json()["teacher"]["ok"] is False and ready.json()["database"]["ok"] is True


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x","o":'
        + b'{"a":' * 1000
        + b"1"
        + b"}" * 1000
        + b"}]}]}",
    ],
    ids=["100k-nested-arrays", "1000-nested-objects"],
)
def test_deeply_nested_json_is_a_400(gateway, teacher, raw):
    """Deep nesting was a 500 (RecursionError)."""
    before = teacher.served
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert "deeper than" in assert_openai_error(r, 400)["message"]
    assert teacher.served == before


def test_a_huge_retry_after_from_the_teacher_is_clamped(gateway, teacher):
    """retry-after: 999999999999 was relayed as it came."""
    saved = teacher.retry_after_s
    teacher.retry_after_s = 999_999_999_999
    try:
        teacher.control(fail_next=[429])
        with pytest.raises(openai.RateLimitError) as info:
            client(gateway).chat.completions.create(model="m", messages=CHAT)
    finally:
        teacher.retry_after_s = saved
    headers = info.value.response.headers
    assert headers["retry-after"] == "600" and headers["retry-after-ms"] == "600000"
