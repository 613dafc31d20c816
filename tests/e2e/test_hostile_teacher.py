"""A broken, slow or hostile teacher (the stand-in's misbehaving mode) cannot hurt the gateway:
every answer outside the contract is an OpenAI-shaped 502 (a stream's error event) with its row
logged; slow answers end at their deadline as 504; large ones at the size cap; known secrets
never come back or reach the log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import TEACHER_KEY, gateway_env
from tests.gateway_process import GatewayProcess
from tests.teacher_stub import StubTeacher

CHAT = [{"role": "user", "content": "What is 2+2?"}]
CLIENT_KEY = "sk-client-PASS-0123456789abcdef"


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert response.headers["content-type"].startswith("application/json")
    return body["error"]


@pytest.fixture(scope="module")
def strict(stub: StubTeacher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with short teacher deadlines and a 2 MiB answer cap, forwarding the client's
    own key to the teacher. (The deadline leaves the stand-in room to build a 4 MB answer or a
    gzip bomb on a busy machine: at 3 s those cases ended as 504s under load.)"""
    env = gateway_env(
        UNDERSTUDY_TEACHER_DEADLINE_S="8",
        UNDERSTUDY_TEACHER_STREAM_IDLE_S="1",
        UNDERSTUDY_TEACHER_STREAM_MAX_S="30",
        UNDERSTUDY_TEACHER_MAX_ANSWER_BYTES=str(2 * 1024 * 1024),
        UNDERSTUDY_TEACHER_PASS_THROUGH_AUTH="true",
        UNDERSTUDY_TEACHER_MAX_RETRIES="0",
    )
    data = tmp_path_factory.mktemp("strict") / "data"
    with GatewayProcess(stub.base_url, data, env=env) as gw:
        yield gw


def chat(gw: GatewayProcess, *, stream: bool = False, key: str = "x", **kw) -> httpx.Response:
    body = {"model": "m", "messages": CHAT, "stream": stream}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(gw.base_url + "/chat/completions", json=body, headers=headers, **kw)


def events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


# -- R3 / R7: answers outside the contract ---------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "usage_str",
        "usage_obj",
        "usage_huge",
        "model_obj",
        "deep",
        "html",
        "not_json",
        "array",
        "status:501",
        "status:505",
        "status:302",
        "status:204",
        "surrogate",
    ],
)
def test_a_whole_answer_outside_the_contract_is_a_502_with_an_error_row(gateway, teacher, spec):
    """Wrong types were a 500 and no row; HTML, arrays, 501/505 and a 302 without Location
    reached the client as they came; a 5xx whose message held a lone surrogate was a 500 that
    was not even JSON (the error could not be encoded)."""
    teacher.control(misbehave=spec)  # every attempt: a 5xx is retried
    response = chat(gateway)
    error = assert_openai_error(response, 502)
    assert error["type"] == "upstream_error" and error["code"] == "teacher_unavailable"
    row = gateway.row(response.headers["x-request-id"])
    assert row["status"] == "error" and row["http_status"] == 502 and row["error"]


@pytest.mark.parametrize("spec", ["usage_str", "usage_obj", "model_obj", "sse_html"])
def test_a_stream_outside_the_contract_ends_with_an_error_event_then_done(gateway, teacher, spec):
    """A bad usage chunk cut the connection after [DONE] with no row; HTML inside the stream was
    relayed."""
    teacher.control(misbehave_next=[spec])
    response = chat(gateway, stream=True)
    assert response.status_code == 200
    data = events(response)
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])["error"]
    assert error["code"] == "teacher_unavailable" and error["type"] == "upstream_error"
    assert not any(d.startswith("<html>") for d in data)  # not relayed
    row = gateway.row(response.headers["x-request-id"])
    assert row["status"] == "error" and row["http_status"] == 502


def test_a_stream_request_answered_with_html_is_a_502(gateway, teacher):
    teacher.control(misbehave_next=["html"])
    error = assert_openai_error(chat(gateway, stream=True), 502)
    assert "not server-sent events" in error["message"]


def test_a_responses_stream_outside_the_contract_ends_with_its_error_event(gateway, teacher):
    teacher.control(misbehave_next=["usage_str"])
    body = {"model": "m", "input": "What is 2+2?", "stream": True}
    response = httpx.post(gateway.base_url + "/responses", json=body)
    assert response.status_code == 200
    last = response.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\n")
    assert json.loads(last.split("data: ", 1)[1])["code"] == "teacher_unavailable"
    teacher.control(misbehave_next=["model_obj"])
    whole = httpx.post(gateway.base_url + "/responses", json={**body, "stream": False})
    assert assert_openai_error(whole, 502)["code"] == "teacher_unavailable"


def test_a_teacher_4xx_that_is_not_json_is_passed_on_in_the_openai_shape(gateway, teacher):
    teacher.control(misbehave_next=["html:404"])
    error = assert_openai_error(chat(gateway), 404)
    assert error["type"] == "invalid_request_error" and "404" in error["message"]


# -- R4: deadlines, and the client leaving ------------------------------------------------


def test_a_dripping_answer_ends_at_the_deadline_as_a_504(strict, teacher):
    """One byte every 2 s held the request (nothing sent) until its row said ok after 556 s."""
    teacher.control(misbehave_next=["drip:500"])
    started = time.monotonic()
    response = chat(strict, timeout=60)
    assert assert_openai_error(response, 504)["code"] == "teacher_timeout"
    assert time.monotonic() - started < 20  # teacher.deadline_s = 8
    row = strict.row(response.headers["x-request-id"])
    assert row["status"] == "error" and row["http_status"] == 504


def test_a_stream_of_keep_alive_comments_ends_at_the_idle_limit(strict, teacher):
    """A stream of keep-alive comments was held forever."""
    teacher.control(misbehave_next=["keepalive:100"])
    started = time.monotonic()
    response = chat(strict, stream=True, timeout=30)
    assert response.status_code == 200
    data = events(response)
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["code"] == "teacher_timeout"
    assert time.monotonic() - started < 10  # teacher.stream_idle_s = 1
    assert strict.row(response.headers["x-request-id"])["status"] == "cut"


def test_a_client_that_leaves_cancels_the_whole_answer_upstream(gateway, teacher):
    """The teacher call went on after the client left, and the row said ok."""
    teacher.control(delay_ms=3000)
    answered = teacher.served
    with pytest.raises(httpx.ReadTimeout):
        chat(gateway, timeout=0.5)
    rows = gateway.wait_rows("status = 'incomplete' and http_status = 499", timeout=2.5)
    assert rows, "the row of a client that left was not written at once"
    time.sleep(3)
    assert teacher.served == answered  # the teacher saw its caller leave: nothing answered


# -- R5: size ----------------------------------------------------------------------------------


def _peak_rss_mb(gw: GatewayProcess) -> float:
    assert gw.proc is not None
    status = Path(f"/proc/{gw.proc.pid}/status").read_text()
    line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_an_answer_over_the_size_cap_is_a_502_and_a_gzip_bomb_never_expands(strict, teacher):
    """A 200 MB body took RSS to 1.2 GB and wrote a 200 MB row; a 1 MB gzip bomb sent 1 GB to
    the client (RSS 2.85 GB)."""
    teacher.control(misbehave_next=["huge:4"])
    error = assert_openai_error(chat(strict), 502)
    assert "teacher.max_answer_bytes" in error["message"]
    before = _peak_rss_mb(strict)
    teacher.control(misbehave_next=["gzip_bomb:1024"])
    response = chat(strict, timeout=60)
    assert "larger than" in assert_openai_error(response, 502)["message"]
    assert _peak_rss_mb(strict) - before < 100
    row = strict.row(response.headers["x-request-id"])
    assert row["status"] == "error" and row["response_json"] is None


# -- I1 / I2: secrets and retry-after ---------------------------------------------------------


def test_the_teacher_key_echoed_in_error_text_is_redacted(gateway, teacher):
    """The key the teacher got came back in the client's 502 message and the log's error."""
    teacher.control(misbehave="echo_auth:500")
    response = chat(gateway)
    error = assert_openai_error(response, 502)
    assert TEACHER_KEY not in response.text and "[redacted]" in error["message"]
    row = gateway.row(response.headers["x-request-id"])
    assert TEACHER_KEY not in row["error"] and "[redacted]" in row["error"]
    teacher.control(misbehave="echo_auth:400")
    refused = chat(gateway)
    assert refused.status_code == 400 and TEACHER_KEY not in refused.text
    assert TEACHER_KEY not in (gateway.row(refused.headers["x-request-id"])["error"] or "")


def test_the_clients_own_key_echoed_back_is_redacted_chat_and_relay(strict, teacher):
    """With pass-through auth the client's key went into the log's error column and its 502."""
    teacher.control(misbehave_next=["echo_auth:500"])
    response = chat(strict, key=CLIENT_KEY)
    assert assert_openai_error(response, 502) and CLIENT_KEY not in response.text
    row = strict.row(response.headers["x-request-id"])
    assert CLIENT_KEY not in row["error"] and "[redacted]" in row["error"]
    relayed = httpx.post(
        strict.base_url + "/embeddings",
        json={"model": "text-embedding-3-small", "input": "hi"},
        headers={"authorization": f"Bearer {CLIENT_KEY}", "x-stub-misbehave": "echo_auth:400"},
    )
    assert relayed.status_code == 400 and CLIENT_KEY not in relayed.text
    assert "[redacted]" in relayed.json()["error"]["message"]
    row = strict.row(relayed.headers["x-request-id"])
    assert CLIENT_KEY not in row["error"]


def test_a_huge_retry_after_on_a_relayed_call_is_clamped(gateway, teacher):
    """retry-after: 999999999999 was relayed as it came on pass-through paths."""
    saved = teacher.retry_after_s
    teacher.retry_after_s = 999_999_999_999
    try:
        response = httpx.post(
            gateway.base_url + "/embeddings",
            json={"model": "text-embedding-3-small", "input": "hi"},
            headers={"x-stub-fail": "429"},
        )
    finally:
        teacher.retry_after_s = saved
    assert response.status_code == 429
    assert response.headers["retry-after"] == "600"
    assert response.headers["retry-after-ms"] == "600000"
