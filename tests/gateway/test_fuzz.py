"""Fuzzing request bodies against the app in-process (a stand-in teacher on 127.0.0.1):
whatever arrives, the answer is never a 500 and never a stack trace, and every error is in
OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from tests.teacher_stub import StubTeacher
from understudy.gateway.app import create_app
from understudy.settings import load_settings

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)
content = (
    st.text(max_size=60)
    | values
    | st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": values})
    )
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "x"]) | values},
    optional={
        "content": content,
        "name": values,
        "tool_calls": values,
        "tool_call_id": values,
    },
)
common = {
    "stream": st.booleans() | values,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": values}) | values,
    "max_tokens": st.integers(-3, 64) | values,
    "max_completion_tokens": st.integers(-3, 64) | values,
    "n": st.integers(-1, 3) | values,
    "temperature": st.floats(-1, 3) | values,
    "top_p": values,
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=5) | values,
    "seed": values,
    "logprobs": values,
    "top_logprobs": st.integers(-1, 25) | values,
    "user": values,
    "metadata": values,
    "response_format": values,
    "tools": values,
    "tool_choice": values,
    "unknown_field": values,
}
chat_bodies = st.fixed_dictionaries(
    {"model": st.text(max_size=20) | values, "messages": st.lists(message, max_size=3) | values},
    optional=common,
)
completion_bodies = st.fixed_dictionaries(
    {"model": st.text(max_size=20) | values, "prompt": st.text(max_size=60) | values},
    optional=common,
)
# Well-formed requests with odd but valid values: these reach the stand-in teacher.
valid_common = {
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "max_tokens": st.integers(1, 64),
    "n": st.integers(1, 3),
    "temperature": st.floats(0, 2),
    "stop": st.lists(st.text(max_size=5), max_size=4),
    "seed": st.integers(0, 2**31),
    "user": st.text(max_size=20),
    "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    "unknown_field": values,
}
valid_chat = st.fixed_dictionaries(
    {
        "model": st.text(min_size=1, max_size=20),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["system", "user", "assistant"]),
                    "content": st.text(max_size=80),
                }
            ),
            min_size=1,
            max_size=3,
        ),
        "stream": st.booleans(),
    },
    optional=valid_common,
)
valid_completion = st.fixed_dictionaries(
    {
        "model": st.text(min_size=1, max_size=20),
        "prompt": st.text(max_size=80),
        "stream": st.booleans(),
    },
    optional=valid_common,
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=70)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[TestClient]:
    stub = StubTeacher()
    stub.start()
    env = {
        "UNDERSTUDY_DATA_DIR": str(tmp_path_factory.mktemp("fuzz") / "data"),
        "UNDERSTUDY_TEACHER_URL": stub.base_url,
        "UNDERSTUDY_TEACHER_API_KEY": "sk-teacher",
        "UNDERSTUDY_TEACHER_TIMEOUT_S": "5",
        "UNDERSTUDY_STUDENT_BACKEND": "none",
        "UNDERSTUDY_MAX_BODY_BYTES": "4096",
        "UNDERSTUDY_ADMIN_KEY": "admin",
    }
    try:
        with TestClient(app=create_app(load_settings(env=env))) as test_client:
            yield test_client
    finally:
        stub.stop()


def check(response: Any) -> None:
    text = response.text
    assert response.status_code < 500, (response.status_code, text[:500])
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    assert response.headers["x-request-id"].startswith("req_")
    if response.status_code != 200:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert text.rstrip().endswith("data: [DONE]"), text[-200:]


def post(client: TestClient, path: str, body: Any, headers: dict[str, str] | None = None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    check(
        client.post(
            path, content=raw, headers={"content-type": "application/json", **(headers or {})}
        )
    )


@FUZZ
@given(body=valid_chat | chat_bodies, task=st.none() | header_text)
def test_chat_bodies(client, body, task):
    post(client, "/v1/chat/completions", body, {"x-understudy-task": task} if task else None)


@FUZZ
@given(body=valid_completion | completion_bodies)
def test_completion_bodies(client, body):
    post(client, "/v1/completions", body)


@FUZZ
@given(
    path=st.sampled_from(
        ["/v1/chat/completions", "/v1/completions", "/v1/feedback", "/admin/tasks/t/mode"]
    ),
    raw=st.binary(max_size=300) | values.map(lambda v: json.dumps(v).encode()),
)
def test_any_bytes_anywhere(client, path, raw):
    post(client, path, raw, {"authorization": "Bearer admin"})


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {"request_id": st.text(max_size=30) | values},
        optional={"score": values | st.floats(-2, 2), "correction": values, "comment": values},
    )
)
def test_feedback_bodies(client, body):
    post(client, "/v1/feedback", body)


def test_oversize_and_non_json_content(client):
    post(client, "/v1/chat/completions", b"x" * 5000)
    post(client, "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user"')
    post(client, "/v1/chat/completions", b'{"model": NaN}')
    check(client.get("/v1/chat/completions"))
    check(client.post("/v1/nope", content=b"{}"))
