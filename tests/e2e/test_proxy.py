"""A client switches base_url and nothing else changes; every exchange is logged."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from tests.e2e.conftest import TEACHER_KEY, TEACHER_MODEL


def client(gateway, **kw) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.base_url, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw
    )


def test_chat_non_streaming_is_answered_by_the_teacher_and_logged(gateway, teacher):
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You answer arithmetic."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        temperature=0,
        seed=7,
        user="u-1",
        metadata={"team": "a"},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "4"
    assert completion.model == TEACHER_MODEL
    assert raw.headers["x-understudy-served-by"] == "teacher"
    request_id = raw.headers["x-request-id"]
    assert request_id.startswith("req_")

    row = gateway.row(request_id)
    assert row["status"] == "ok" and row["served_by"] == "teacher" and row["stream"] == 0
    assert row["requested_model"] == "gpt-4o-mini" and row["teacher_model"] == TEACHER_MODEL
    assert row["task"].startswith("auto-you-answer-arithmetic") and row["task_source"] == (
        "fingerprint"
    )
    assert json.loads(row["request_json"])["seed"] == 7
    assert json.loads(row["response_json"])["choices"][0]["message"]["content"] == "4"
    assert row["total_tokens"] == completion.usage.total_tokens > 0
    assert row["latency_ms"] > 0 and row["http_status"] == 200


def test_unknown_fields_and_all_parameters_reach_the_teacher_untouched(gateway, teacher):
    schema = {
        "type": "object",
        "properties": {"intent": {"type": "string"}},
        "required": ["intent"],
    }
    client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Give me JSON."}],
        n=2,
        stop=["\n\n"],
        temperature=0.3,
        top_p=0.9,
        max_completion_tokens=50,
        seed=1,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "intent", "schema": schema},
        },
        logprobs=True,
        top_logprobs=2,
        user="u",
        metadata={"k": "v"},
        extra_body={"vendor_option": {"deep": [1, 2]}},
    )
    sent = teacher.requests[-1]["json"]
    assert sent["vendor_option"] == {"deep": [1, 2]}
    assert sent["n"] == 2 and sent["stop"] == ["\n\n"] and sent["top_logprobs"] == 2
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert teacher.requests[-1]["headers"]["authorization"] == f"Bearer {TEACHER_KEY}"


def test_n_logprobs_and_stop_come_back_as_the_teacher_sent_them(gateway, teacher):
    completion = client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell me a story."}],
        n=2,
        logprobs=True,
        top_logprobs=2,
        stop=["small"],
    )
    assert len(completion.choices) == 2
    assert completion.choices[0].message.content == "Once upon a time there was a "
    assert completion.choices[0].logprobs.content[0].top_logprobs


def test_streaming_is_relayed_and_the_assembled_answer_logged(gateway, teacher):
    with client(gateway).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell me a story."}],
        stream=True,
    ) as response:
        request_id = response.headers["x-request-id"]
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Once upon a time there was a small model that learned from a big one."
    # The client did not ask for usage: it must not see the usage chunk the gateway asked for.
    assert all(c.choices for c in chunks)
    row = gateway.row(request_id)
    assert row["stream"] == 1 and row["status"] == "ok"
    assert json.loads(row["response_json"])["choices"][0]["message"]["content"] == text
    assert row["completion_tokens"] > 0  # usage logged although the client did not ask
    assert row["ttfb_ms"] is not None and row["ttfb_ms"] <= row["latency_ms"]


async def test_async_streaming_with_usage(gateway, teacher):
    aclient = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    stream = await aclient.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Name a colour."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "blue"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    await aclient.close()


def test_tool_call_streaming(gateway, teacher):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    stream = client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice="auto",
        stream=True,
    )
    name, args, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name += call.function.name or ""
                args += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_weather" and json.loads(args) == {"city": "Paris"}
    assert finish == "tool_calls"
    deadline = time.monotonic() + 5  # bodies are stored compressed: matched here, not in SQL
    while not (found := [r for r in gateway.rows("stream = 1") if tool_call_logged(r)]):
        assert time.monotonic() < deadline, "the streamed tool call was not logged"
        time.sleep(0.02)
    row = found[-1]
    logged = json.loads(row["response_json"])["choices"][0]["message"]["tool_calls"][0]
    assert logged["function"]["name"] == "get_weather"
    assert json.loads(logged["function"]["arguments"]) == {"city": "Paris"}


def test_non_streaming_tool_call(gateway, teacher):
    completion = client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_legacy_completions_streaming_and_not(gateway, teacher):
    c = client(gateway)
    raw = c.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hello:"
    )
    assert raw.parse().choices[0].text == " Hello there, friend."
    row = gateway.row(raw.headers["x-request-id"])
    assert row["endpoint"] == "completions" and row["status"] == "ok"
    text = "".join(
        ch.choices[0].text
        for ch in c.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say hello:", stream=True
        )
        if ch.choices
    )
    assert text == " Hello there, friend."


def test_models_lists_teacher_models_and_routes(gateway, teacher):
    ids = {m.id for m in client(gateway).models.list()}
    assert TEACHER_MODEL in ids or "gpt-4o-mini" in ids
    assert "support-bot" in ids


def test_task_from_header_route_and_fingerprint(gateway, teacher):
    c = client(gateway)
    messages = [{"role": "user", "content": "Name a colour."}]
    by_header = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"X-Understudy-Task": "colours"}
    )
    by_route = c.chat.completions.with_raw_response.create(model="support-bot", messages=messages)
    assert by_header.headers["x-understudy-task"] == "colours"
    assert by_route.headers["x-understudy-task"] == "support"
    assert gateway.row(by_header.headers["x-request-id"])["task_source"] == "header"
    assert gateway.row(by_route.headers["x-request-id"])["task_source"] == "route"
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(
            model="m", messages=messages, extra_headers={"X-Understudy-Task": "no spaces allowed"}
        )
    assert info.value.body["param"] == "X-Understudy-Task"


def tool_call_logged(row: dict[str, Any]) -> bool:
    return "get_weather" in (row["response_json"] or "")
