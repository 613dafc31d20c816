"""When the teacher refuses or fails: what the client is told, and the one line the gateway's
log keeps of it (status, attempts, task, request id; never a key).

A teacher that refuses the gateway's own teacher key (or its lack of one) is not the client's
key being wrong: the client gets a 502 naming the gateway's setting. Where the client's own key
is forwarded (pass-through), the teacher's 401 is the client's and passes through as it is.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import TEACHER_KEY, gateway_env
from tests.gateway_process import ROOT, GatewayProcess, free_port
from tests.teacher_stub import StubTeacher

CHAT = [{"role": "user", "content": "What is 2+2?"}]
STORY = [{"role": "user", "content": "Tell me a story."}]
TASK = {"X-Understudy-Task": "support-intent"}
CLIENT_KEY = "sk-client-own-KEY-0123456789abcdef"


@pytest.fixture(scope="module")
def gw(stub: StubTeacher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with a teacher key and a 1 s teacher timeout."""
    env = gateway_env(UNDERSTUDY_TEACHER_TIMEOUT_S="1")
    with GatewayProcess(stub.base_url, tmp_path_factory.mktemp("gw") / "data", env=env) as g:
        yield g


def client(gateway: GatewayProcess, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=retries)


def failure_lines(gateway: GatewayProcess, request_id: str) -> list[str]:
    return [
        line
        for line in gateway.output().splitlines()
        if request_id in line and "teacher call failed" in line
    ]


def test_a_refused_teacher_key_is_a_502_that_names_the_gateways_setting(gw, teacher):
    teacher.control(accept_keys=["sk-some-other-key-000000"])
    with pytest.raises(openai.APIStatusError) as info:
        client(gw, retries=2).chat.completions.create(model="m", messages=CHAT, extra_headers=TASK)
    error = info.value
    assert not isinstance(error, openai.AuthenticationError)  # not the client's key
    assert error.status_code == 502 and error.body["code"] == "teacher_auth_failed"
    assert "rejected the gateway's teacher credentials" in error.body["message"]
    assert "UNDERSTUDY_TEACHER_API_KEY" in error.body["message"]
    assert error.response.headers["x-should-retry"] == "false"
    assert len(teacher.requests) == 1  # neither the gateway nor the SDK asked again
    request_id = error.response.headers["x-request-id"]
    (line,) = failure_lines(gw, request_id)
    assert "HTTP 502 after 1 attempt;" in line and "task support-intent" in line
    assert gw.row(request_id)["http_status"] == 502

    # A relayed endpoint (embeddings) says the same.
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).embeddings.create(model="text-embedding-3-small", input="hi")
    assert info.value.status_code == 502 and "UNDERSTUDY_TEACHER_API_KEY" in info.value.message
    (line,) = failure_lines(gw, info.value.response.headers["x-request-id"])
    assert "HTTP 502 after 1 attempt;" in line and "POST /v1/embeddings" in line, line


def test_a_gateway_without_a_teacher_key_says_so_when_refused(stub, teacher, tmp_path):
    env = gateway_env()
    env.pop("UNDERSTUDY_TEACHER_API_KEY")
    teacher.control(accept_keys=[TEACHER_KEY])
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as g:
        with pytest.raises(openai.APIStatusError) as info:
            client(g).chat.completions.create(model="m", messages=CHAT)
        assert info.value.status_code == 502
        assert "no teacher key configured" in info.value.body["message"]
        assert "authorization" not in teacher.requests[-1]["headers"]
        output = g.output()
    assert "no teacher key is configured" not in output  # the teacher is local: no warning


def test_the_clients_own_forwarded_key_refused_is_the_teachers_401(stub, teacher, tmp_path):
    env = gateway_env(UNDERSTUDY_TEACHER_PASS_THROUGH_AUTH="true")
    env.pop("UNDERSTUDY_TEACHER_API_KEY")
    teacher.control(accept_keys=["sk-the-right-one-00000000"])
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as g:
        with pytest.raises(openai.AuthenticationError) as info:
            client(g).chat.completions.create(model="m", messages=CHAT)
        assert info.value.body["code"] == "invalid_api_key"  # the teacher's own words


def test_each_teacher_failure_is_one_log_line(gw, teacher):
    """502 after retries, 429, 401, a timeout and a cut stream: one line each, with the status,
    the attempts, the task and the request id."""
    c = client(gw)
    seen: dict[str, str] = {}
    for name, fault, status in (("5xx", [500, 500, 500], 502), ("429", [429], 429)):
        teacher.control(fail_next=fault)
        with pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model="m", messages=CHAT, extra_headers=TASK)
        assert info.value.status_code == status
        seen[name] = info.value.response.headers["x-request-id"]
    teacher.control(delay_ms=5000)
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="m", messages=CHAT, extra_headers=TASK)
    assert info.value.status_code == 504
    seen["timeout"] = info.value.response.headers["x-request-id"]
    teacher.control(reset=True, fail_next=["cut:2"])
    raw = c.chat.completions.with_raw_response.create(
        model="m", messages=STORY, stream=True, extra_headers=TASK
    )
    seen["cut"] = raw.headers["x-request-id"]
    with pytest.raises(openai.APIError):
        list(raw.parse())

    gw.row(seen["cut"])  # the stream's end was settled
    expected = {
        "5xx": "HTTP 502 after 3 attempts",
        "429": "HTTP 429 after 1 attempt;",
        "timeout": "HTTP 504 after",
        "cut": "stream cut after 1 attempt",
    }
    for name, request_id in seen.items():
        lines = failure_lines(gw, request_id)
        assert len(lines) == 1, (name, lines)
        assert expected[name] in lines[0] and "task support-intent" in lines[0], lines[0]
        assert "WARNING" in lines[0]


def test_a_key_the_teacher_echoes_never_reaches_the_log(gw, teacher):
    teacher.control(misbehave_next=["echo_auth:401"])
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).chat.completions.create(model="m", messages=CHAT, extra_headers=TASK)
    assert TEACHER_KEY not in info.value.response.text
    request_id = info.value.response.headers["x-request-id"]
    assert len(failure_lines(gw, request_id)) == 1
    # A key-shaped secret the gateway does not know is not logged either.
    teacher.control(misbehave_next=["echo_auth:429"])
    unknown = openai.OpenAI(
        base_url=gw.base_url, api_key="sk-proj-UNKNOWNsecret123456", max_retries=0
    )
    with pytest.raises(openai.APIStatusError):
        unknown.chat.completions.create(model="m", messages=CHAT)
    output = gw.output()
    assert TEACHER_KEY not in output and "UNKNOWNsecret" not in output
    assert CLIENT_KEY not in output


def test_a_teacher_that_is_not_local_and_no_key_is_warned_about_at_start(tmp_path):
    env = gateway_env()
    env.pop("UNDERSTUDY_TEACHER_API_KEY")
    with GatewayProcess("https://teacher.invalid/v1", tmp_path / "data", env=env) as g:
        assert httpx.get(g.url + "/health").status_code == 200
        output = g.output()
    (warning,) = [line for line in output.splitlines() if "no teacher key" in line]
    assert "WARNING" in warning and "UNDERSTUDY_TEACHER_API_KEY" in warning
    assert "https://teacher.invalid/v1" in warning


@pytest.mark.sqlite_only("starts `understudy serve` itself, on its data directory's file")
def test_a_busy_port_is_one_line_naming_the_address_and_setting(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = subprocess.run(
            [sys.executable, "-m", "understudy.cli", "serve", "--port", str(port)]
            + ["--data-dir", str(tmp_path / "data"), "--teacher-url", "http://127.0.0.1:9/v1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 3  # the documented exit code of a serve that could not start
    output = done.stdout + done.stderr
    assert "gateway ready" not in output and "Traceback" not in output
    (line,) = output.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "already in use" in line
    assert "--port" in line and "UNDERSTUDY_PORT" in line
