"""The stand-in teacher speaks OpenAI's wire format closely enough for the real SDK, and
misbehaves exactly as scripted: the gateway's tests trust both."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.teacher_stub import StubTeacher, running_stub

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini-2024-07-18"
STORY = "Once upon a time there was a small model that learned from a big one."
COUNT = " ".join(str(i) for i in range(1, 21))
WEATHER = {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TABLE = {
    "What is 2+2?": "4",
    "Tell me a story.": STORY,
    "Weather in Paris?": WEATHER,
    "Give me JSON.": {"intent": "card_arrival"},
    "Say hello:": " Hello there, friend.",
    "Count to twenty.": COUNT,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def ask(content: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]


@pytest.fixture(scope="module")
def server():
    with running_stub(table=TABLE, model=MODEL, timeout_s=3, retry_after_s=0.05) as stub:
        yield stub


@pytest.fixture
def stub(server: StubTeacher) -> StubTeacher:
    server.control(reset=True)
    server.clear()
    return server


@pytest.fixture
def client(stub: StubTeacher) -> openai.OpenAI:
    return openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0)


def post(stub: StubTeacher, body: dict, **kw) -> httpx.Response:
    return httpx.post(stub.base_url + "/chat/completions", json=body, **kw)


def raw_events(stub: StubTeacher, body: dict, headers: dict | None = None) -> list[str]:
    """The ``data:`` payloads of a streamed chat completion, read off the wire."""
    with httpx.stream(
        "POST", stub.base_url + "/chat/completions", json=body, headers=headers
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


# -- answers -----------------------------------------------------------------------------------


def test_chat_answer_comes_from_the_table_under_the_dated_model_name(stub, client):
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=ask("What is 2+2?"))
    assert completion.model == MODEL
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.system_fingerprint.startswith("fp_") and completion.created > 0
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "stop", None)
    assert choice.message.role == "assistant" and choice.message.content == "4"
    assert choice.message.refusal is None and choice.message.tool_calls is None
    usage = completion.usage
    assert usage.completion_tokens == 1 and usage.prompt_tokens > 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    other = client.chat.completions.create(model="m", messages=ask("Translate this sentence now"))
    assert other.choices[0].message.content == "ok: Translate this sentence"
    assert other.id != completion.id
    json_answer = client.chat.completions.create(model="m", messages=ask("Give me JSON."))
    assert json.loads(json_answer.choices[0].message.content) == {"intent": "card_arrival"}


def test_n_stop_and_token_limits(stub, client):
    many = client.chat.completions.create(model="m", messages=ask("Tell me a story."), n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert {c.message.content for c in many.choices} == {STORY}
    assert many.usage.completion_tokens == 3 * len(STORY.split())

    stopped = client.chat.completions.create(
        model="m", messages=ask("Tell me a story."), stop=["small", "time"]
    )
    assert stopped.choices[0].message.content == "Once upon a "
    assert stopped.choices[0].finish_reason == "stop"

    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3}):
        short = client.chat.completions.create(model="m", messages=ask("Tell me a story."), **limit)
        assert short.choices[0].message.content == "Once upon a"
        assert short.choices[0].finish_reason == "length"
        assert short.usage.completion_tokens == 3


def test_logprobs_cover_every_token_with_top_alternatives(stub, client):
    completion = client.chat.completions.create(
        model="m", messages=ask("Tell me a story."), logprobs=True, top_logprobs=3
    )
    tokens = completion.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == STORY
    for token in tokens:
        assert bytes(token.bytes).decode() == token.token
        assert -1 < token.logprob <= 0
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token == token.token
        assert [t.logprob for t in token.top_logprobs] == sorted(
            (t.logprob for t in token.top_logprobs), reverse=True
        )
    again = client.chat.completions.create(
        model="m", messages=ask("Tell me a story."), logprobs=True, top_logprobs=3
    )
    assert again.choices[0].logprobs == completion.choices[0].logprobs  # deterministic


def test_tool_call_entry_answers_with_a_tool_call_only_when_tools_are_offered(stub, client):
    completion = client.chat.completions.create(
        model="m", messages=ask("Weather in Paris?"), tools=TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    plain = client.chat.completions.create(model="m", messages=ask("Weather in Paris?"))
    assert plain.choices[0].message.content == "ok: Weather in Paris?"
    declined = client.chat.completions.create(
        model="m", messages=ask("Weather in Paris?"), tools=TOOLS, tool_choice="none"
    )
    assert declined.choices[0].finish_reason == "stop"


# -- streaming ---------------------------------------------------------------------------------


def test_stream_is_shaped_like_openais(stub, client):
    body = {"model": "m", "messages": ask("Tell me a story."), "stream": True}
    events = raw_events(stub, body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)  # not asked for
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    middle = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(middle) == len(STORY.split()) and "".join(middle) == STORY
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }

    sdk_chunks = list(
        client.chat.completions.create(model="m", messages=ask("Tell me a story."), stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in sdk_chunks) == STORY


def test_stream_usage_chunk_comes_last_when_asked(stub, client):
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=ask("Tell me a story."),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == len(STORY.split())
    assert all(c.usage is None for c in content)
    body = {
        "model": "m",
        "messages": ask("What is 2+2?"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = raw_events(stub, body)
    assert all(json.loads(e)["usage"] is None for e in events[:-2])


def test_stream_with_n_and_logprobs(stub, client):
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=ask("Tell me a story."),
            stream=True,
            n=2,
            logprobs=True,
            top_logprobs=2,
        )
    )
    texts = {0: "", 1: ""}
    for chunk in chunks:
        (choice,) = chunk.choices
        texts[choice.index] += choice.delta.content or ""
        if choice.delta.content:
            (token,) = choice.logprobs.content
            assert token.token == choice.delta.content and len(token.top_logprobs) == 2
    assert texts == {0: STORY, 1: STORY}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == ["stop", "stop"]


async def test_async_stream_of_a_tool_call(stub):
    aclient = openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0)
    stream = await aclient.chat.completions.create(
        model="m", messages=ask("Weather in Paris?"), tools=TOOLS, stream=True
    )
    chunks = [chunk async for chunk in stream]
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    (opening,) = first.tool_calls
    assert opening.index == 0 and opening.id.startswith("call_") and opening.type == "function"
    assert opening.function.name == "get_weather" and opening.function.arguments == ""
    fragments = [c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-1]]
    assert len(fragments) > 1 and json.loads("".join(fragments)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    await aclient.close()


async def test_async_non_streaming(stub):
    async with openai.AsyncOpenAI(base_url=stub.base_url, api_key="k", max_retries=0) as aclient:
        completion = await aclient.chat.completions.create(model="m", messages=ask("What is 2+2?"))
    assert completion.choices[0].message.content == "4"


# -- other endpoints ---------------------------------------------------------------------------


def test_legacy_completions(stub, client):
    completion = client.completions.create(model="m", prompt="Say hello:", logprobs=2)
    assert completion.object == "text_completion" and completion.model == MODEL
    choice = completion.choices[0]
    assert choice.text == " Hello there, friend." and choice.finish_reason == "stop"
    assert "".join(choice.logprobs.tokens) == choice.text
    assert choice.logprobs.text_offset[0] == len("Say hello:")
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)

    chunks = list(client.completions.create(model="m", prompt="Say hello:", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == " Hello there, friend."
    assert chunks[-1].choices[0].finish_reason == "stop"

    long = client.completions.create(model="m", prompt="Count to twenty.")  # OpenAI's default: 16
    assert long.choices[0].finish_reason == "length"
    assert long.choices[0].text == " ".join(COUNT.split()[:16])
    batch = client.completions.create(model="m", prompt=["Say hello:", "What is 2+2?"], n=2)
    assert [c.text for c in batch.choices] == [" Hello there, friend."] * 2 + ["4"] * 2


def test_models(stub, client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_invalid_requests_get_openai_errors(stub):
    missing = post(stub, {"model": "m"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
    options = post(stub, {"model": "m", "messages": ask("x"), "stream_options": {}})
    assert options.status_code == 400 and options.json()["error"]["param"] == "stream_options"
    garbage = httpx.post(stub.base_url + "/chat/completions", content=b"{nope")
    assert garbage.status_code == 400
    assert set(garbage.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(stub.base_url + "/nothing").status_code == 404


# -- recording ---------------------------------------------------------------------------------


def test_requests_are_recorded_with_headers_and_unknown_fields(stub, client):
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=ask("What is 2+2?"),
        extra_body={"vendor_option": {"deep": [1, 2]}},
        extra_headers={"x-trace": "t-1"},
    )
    (seen,) = stub.requests
    assert seen["method"] == "POST" and seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == "Bearer sk-test"
    assert seen["headers"]["x-trace"] == "t-1"
    assert seen["json"]["vendor_option"] == {"deep": [1, 2]}
    assert stub.bodies() == [seen["json"]]

    listing = httpx.get(stub.url + "/_requests").json()
    assert listing["data"][-1]["json"]["vendor_option"] == {"deep": [1, 2]}
    assert listing["counts"] == {"requests": 1, "answered": 1}
    assert stub.served == 1
    httpx.delete(stub.url + "/_requests")
    assert stub.requests == [] and stub.served == 0


def test_only_the_last_requests_are_kept_and_start_stop_are_quick():
    started = time.monotonic()
    with running_stub(max_requests=2) as small:
        assert time.monotonic() - started < 0.5
        for word in ("one", "two", "three"):
            post(small, {"model": "m", "messages": ask(word)})
        assert [r["json"]["messages"][-1]["content"] for r in small.requests] == ["two", "three"]
        assert small.counts["requests"] == 3
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 0.5
    with pytest.raises(httpx.ConnectError):
        post(small, {"model": "m", "messages": ask("x")})


# -- faults ------------------------------------------------------------------------------------


def test_scripted_failures_then_normal_service(stub):
    stub.control(fail_next=[500, 503, "429"])
    body = {"model": "m", "messages": ask("What is 2+2?")}
    responses = [post(stub, body) for _ in range(4)]
    assert [r.status_code for r in responses] == [500, 503, 429, 200]
    for response in responses[:3]:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert responses[0].json()["error"]["type"] == "server_error"
    assert responses[2].headers["retry-after"] == "1"
    assert responses[2].headers["retry-after-ms"] == "50"
    assert responses[3].json()["choices"][0]["message"]["content"] == "4"
    assert len(stub.requests) == 4 and stub.served == 1


def test_the_sdk_retries_through_scripted_rate_limits(stub):
    stub.control(fail_next=[429, 429])
    retrying = openai.OpenAI(base_url=stub.base_url, api_key="k", max_retries=2)
    completion = retrying.chat.completions.create(model="m", messages=ask("What is 2+2?"))
    assert completion.choices[0].message.content == "4"
    assert len(stub.requests) == 3


def test_failures_by_header_leave_the_script_alone(stub, client):
    stub.control(fail_next=[500])
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(
            model="m", messages=ask("x"), extra_headers={"x-stub-fail": "401"}
        )
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="m", messages=ask("x"), extra_headers={"x-stub-fail": "400"}
        )
    assert post(stub, {"model": "m", "messages": ask("x")}).status_code == 500
    assert post(stub, {"model": "m", "messages": ask("x")}).status_code == 200
    bad = post(stub, {"model": "m", "messages": ask("x")}, headers={"x-stub-fail": "sometimes"})
    assert bad.status_code == 400 and "sometimes" in bad.json()["error"]["message"]


def test_drop_closes_the_connection_without_a_response(stub):
    body = {"model": "m", "messages": ask("What is 2+2?")}
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        post(stub, body, headers={"x-stub-fail": "drop"})
    stub.control(fail_next=["drop"])
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        post(stub, {**body, "stream": True})
    assert post(stub, body).status_code == 200


def test_cut_stream_sends_n_events_then_closes_without_done(stub, client):
    body = {"model": "m", "messages": ask("Tell me a story."), "stream": True}
    for headers, control, count in (
        (None, {"cut_stream_after": 3}, 3),
        ({"x-stub-fail": "cut:2"}, {}, 2),
    ):
        stub.control(reset=True, **control)
        received = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream(
                "POST", stub.base_url + "/chat/completions", json=body, headers=headers
            ) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(line)
        assert len(received) == count and "[DONE]" not in received[-1]
    stub.control(reset=True, cut_stream_after=2)
    assert post(stub, {**body, "stream": False}).status_code == 200  # streams only
    with pytest.raises(openai.APIConnectionError):
        list(
            client.chat.completions.create(model="m", messages=ask("Tell me a story."), stream=True)
        )


def test_cut_json_body_after_n_bytes(stub):
    body = {"model": "m", "messages": ask("What is 2+2?")}
    with pytest.raises(httpx.RemoteProtocolError, match="received 7 bytes"):
        post(stub, body, headers={"x-stub-fail": "cut:7"})


def test_delays(stub):
    body = {"model": "m", "messages": ask("What is 2+2?")}
    started = time.monotonic()
    assert post(stub, body, headers={"x-stub-delay-ms": "200"}).status_code == 200
    assert time.monotonic() - started >= 0.2
    stub.control(delay_ms=150)
    started = time.monotonic()
    post(stub, body)
    assert time.monotonic() - started >= 0.15

    stub.control(reset=True, chunk_delay_ms=60)
    arrivals = []
    started = time.monotonic()
    with httpx.stream(
        "POST", stub.base_url + "/chat/completions", json={**body, "stream": True}
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - started)
    # Each event waits 60 ms after the one before it, so the k-th cannot arrive before k such
    # waits have passed. (The gaps between arrivals are no measure of it: an event the client
    # reads late shortens the gap to the next. Found: 0.042 s on a busy machine.)
    assert len(arrivals) == 4
    assert all(at >= k * 0.06 for k, at in enumerate(arrivals)), arrivals


def test_timeout_outlasts_the_client_and_stall_hangs_mid_stream(stub):
    body = {"model": "m", "messages": ask("Tell me a story.")}
    with pytest.raises(httpx.ReadTimeout):
        post(stub, body, headers={"x-stub-fail": "timeout"}, timeout=0.3)
    stub.control(timeout_s=0.2)  # a slow answer, not an endless one
    started = time.monotonic()
    assert post(stub, body, headers={"x-stub-fail": "timeout"}).status_code == 200
    assert time.monotonic() - started >= 0.2

    received = []
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "POST",
            stub.base_url + "/chat/completions",
            json={**body, "stream": True},
            headers={"x-stub-fail": "stall:2"},
            timeout=httpx.Timeout(5, read=0.1),
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line)
    assert len(received) == 2


def test_stop_cuts_off_a_request_that_is_timing_out():
    outcome = {}
    with running_stub(timeout_s=30) as stub:

        def call() -> None:
            try:
                post(stub, {"model": "m", "messages": ask("x")}, headers={"x-stub-fail": "timeout"})
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.2)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 0.5
    caller.join(2)
    assert isinstance(outcome["error"], httpx.RemoteProtocolError)


def test_random_faults_are_reproducible_with_a_seed(stub):
    def run() -> list[int | str]:
        stub.control(reset=True, random={"p500": 0.3, "pdrop": 0.1, "seed": 7})
        outcomes: list[int | str] = []
        for _ in range(30):
            try:
                outcomes.append(post(stub, {"model": "m", "messages": ask("x")}).status_code)
            except httpx.RemoteProtocolError:
                outcomes.append("drop")
        return outcomes

    first = run()
    assert first == run()
    assert {200, 500, "drop"} <= set(first)


def test_control_endpoint(stub):
    state = httpx.post(stub.url + "/_control", json={"fail_next": [503], "delay_ms": 0}).json()
    assert state["controls"]["fail_next"] == [503]
    body = {"model": "m", "messages": ask("x")}
    assert [post(stub, body).status_code for _ in range(2)] == [503, 200]
    httpx.post(stub.url + "/_control", json={"fail_always": 502})
    assert [post(stub, body).status_code for _ in range(2)] == [502, 502]
    httpx.post(stub.url + "/_control", json={"reset": True})
    assert post(stub, body).status_code == 200
    refused = httpx.post(stub.url + "/_control", json={"fail_nxt": [500]})
    assert refused.status_code == 400 and "fail_nxt" in refused.json()["error"]["message"]
    assert httpx.get(stub.url + "/_control").json()["controls"]["fail_next"] == []
    with pytest.raises(ValueError, match="random"):
        stub.control(random={"p500": 0.9, "ptimeout": 0.2})


def test_runs_as_its_own_process(tmp_path):
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"ping": "pong"}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.teacher_stub", "--port", "0", "--table", str(table)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = proc.stdout.readline().split()[3]
        for _ in range(100):
            try:
                response = httpx.post(
                    base_url + "/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "ping"}]},
                )
                break
            except httpx.ConnectError:
                time.sleep(0.02)
        assert response.json()["choices"][0]["message"]["content"] == "pong"
    finally:
        proc.terminate()
        assert proc.wait(5) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught


def test_the_misbehaving_teacher_replaces_answers_outside_the_contract(stub):
    body = {"model": "m", "messages": ask("What is 2+2?")}

    def misbehave(spec: str, **kw) -> httpx.Response:
        return post(stub, body, headers={"x-stub-misbehave": spec, "authorization": "Bearer k"})

    html = misbehave("html")
    assert html.status_code == 200 and html.headers["content-type"] == "text/html"
    assert misbehave("array").json() == [1, 2, 3]
    assert misbehave("not_json").headers["content-type"] == "application/json"
    assert misbehave("status:501").status_code == 501
    moved = misbehave("status:302")
    assert moved.status_code == 302 and "location" not in moved.headers
    assert misbehave("deep:500").text.count("[") == 500
    assert "Bearer k" in misbehave("echo_auth:400").json()["error"]["message"]
    assert "\\ud83d" in misbehave("surrogate").text
    bomb = misbehave("gzip_bomb:8")
    assert bomb.headers["content-encoding"] == "gzip" and len(bomb.content) == 8 * 1024**2 + 9
    assert len(misbehave("huge:1").json()["choices"][0]["message"]["content"]) == 1024**2
    with pytest.raises(httpx.ReadTimeout):  # headers at once, then a byte every 2 s
        post(stub, body, headers={"x-stub-misbehave": "drip"}, timeout=httpx.Timeout(0.5))
    assert stub.counts["misbehave:drip"] == 1
    with pytest.raises(ValueError, match="unknown misbehaviour"):
        stub.control(misbehave="nonsense")


def test_the_misbehaving_teacher_alters_real_answers_whole_and_streamed(stub):
    body = {"model": "m", "messages": ask("What is 2+2?")}
    stub.control(misbehave_next=["usage_str", "model_obj", "usage_obj"])
    assert post(stub, body).json()["usage"]["prompt_tokens"] == "12"
    assert post(stub, body).json()["model"] == {}
    assert post(stub, body).json()["usage"]["total_tokens"] == {}
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    stub.control(misbehave="usage_huge")
    usage = [json.loads(e)["usage"] for e in raw_events(stub, stream)[:-1]]
    assert usage[-1]["prompt_tokens"] == 10**20
    stub.control(misbehave="sse_html")
    assert raw_events(stub, stream)[1].startswith("<html>")
    stub.control(reset=True)
    with httpx.stream(
        "POST",
        stub.base_url + "/chat/completions",
        json=stream,
        headers={"x-stub-misbehave": "keepalive:50"},
    ) as response:
        lines = itertools.islice(response.iter_lines(), 6)
        assert [ln for ln in lines if ln] == [": keep-alive"] * 3
