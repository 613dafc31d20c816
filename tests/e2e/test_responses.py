"""The Responses API through the gateway, answered by the teacher: created (whole and
streamed), retrieved, listed, deleted and chained with the official ``openai`` SDK (sync and
async), every exchange logged with its bodies, task, response id, tokens and cost."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import openai
import pytest

from tests.e2e.conftest import TEACHER_KEY, TEACHER_MODEL
from tests.gateway_process import ROOT

ARITHMETIC = "You answer arithmetic."


def client(gateway, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, **kw)


def async_client(gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def test_create_is_answered_by_the_teacher_logged_and_priced(gateway, teacher):
    raw = client(gateway).responses.with_raw_response.create(
        model="gpt-4o-mini",
        instructions=ARITHMETIC,
        input="What is 2+2?",
        temperature=0,
        metadata={"team": "a"},
        extra_body={"vendor_option": {"deep": [1, 2]}},
    )
    response = raw.parse()
    assert response.output_text == "4"
    assert response.model == TEACHER_MODEL and response.id.startswith("resp_")
    assert raw.headers["x-understudy-served-by"] == "teacher"
    sent = teacher.requests[-1]
    assert sent["path"] == "/v1/responses" and sent["json"]["vendor_option"] == {"deep": [1, 2]}
    assert sent["headers"]["authorization"] == f"Bearer {TEACHER_KEY}"

    row = gateway.row(raw.headers["x-request-id"])
    assert row["endpoint"] == "responses" and row["status"] == "ok" and row["stream"] == 0
    assert row["task"].startswith("auto-you-answer-arithmetic")
    assert row["task_source"] == "fingerprint"
    assert row["response_id"] == response.id and row["stored"] == 1
    assert json.loads(row["request_json"])["instructions"] == ARITHMETIC
    assert json.loads(row["response_json"])["output"][0]["content"][0]["text"] == "4"
    assert row["prompt_tokens"] == response.usage.input_tokens > 0
    assert row["completion_tokens"] == response.usage.output_tokens > 0
    assert row["total_tokens"] == response.usage.total_tokens
    assert row["teacher_model"] == TEACHER_MODEL and row["teacher_cost_usd"] > 0


def test_the_same_instructions_as_a_chat_system_prompt_make_the_same_task(gateway, teacher):
    c = client(gateway)
    raw = c.responses.with_raw_response.create(
        model="gpt-4o-mini",
        input=[
            {"role": "developer", "content": "Classify tickets."},
            {"role": "user", "content": "Name a colour."},
        ],
    )
    chat = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "developer", "content": "Classify tickets."},
            {"role": "user", "content": "Name a colour."},
        ],
    )
    assert raw.headers["x-understudy-task"] == chat.headers["x-understudy-task"]
    routed = c.responses.with_raw_response.create(model="support-bot", input="Name a colour.")
    assert routed.headers["x-understudy-task"] == "support"
    named = c.responses.with_raw_response.create(
        model="gpt-4o-mini", input="hi", extra_headers={"X-Understudy-Task": "greetings"}
    )
    assert gateway.row(named.headers["x-request-id"])["task_source"] == "header"


def test_a_stream_is_relayed_event_by_event_and_logged_whole(gateway, teacher):
    with client(gateway).responses.stream(
        model="gpt-4o-mini", input="Tell me a story.", extra_headers={"X-Understudy-Task": "story"}
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text.startswith("Once upon a time")
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") > 5

    (row,) = gateway.wait_rows("response_id = ?", (final.id,))
    assert row["stream"] == 1 and row["status"] == "ok" and row["task"] == "story"
    logged = json.loads(row["response_json"])
    assert logged["output"][0]["content"][0]["text"] == final.output_text
    assert row["prompt_tokens"] == final.usage.input_tokens
    assert row["completion_tokens"] == final.usage.output_tokens
    assert "stream_options" not in teacher.requests[-1]["json"]


def test_raw_stream_events_arrive_as_the_teacher_sends_them(gateway, teacher):
    teacher.control(chunk_delay_ms=150)
    body = {"model": "gpt-4o-mini", "input": "Tell me a story.", "stream": True}
    arrivals = []
    with httpx.stream("POST", gateway.base_url + "/responses", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                arrivals.append(line)
    assert arrivals[0] == "event: response.created"
    assert arrivals[-1] == "event: response.completed"


def test_stored_responses_of_the_teacher_are_retrieved_listed_and_deleted_there(gateway, teacher):
    c = client(gateway)
    created = c.responses.create(model="gpt-4o-mini", input="Name a colour.")
    fetched = c.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == "blue"
    items = c.responses.input_items.list(created.id)
    assert [item.content[0].text for item in items.data] == ["Name a colour."]
    assert c.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(created.id)
    paths = [(r["method"], r["path"]) for r in teacher.requests]
    assert ("GET", f"/v1/responses/{created.id}") in paths
    assert ("DELETE", f"/v1/responses/{created.id}") in paths
    row = gateway.wait_rows("response_id = ?", (created.id,))[0]
    assert row["deleted_at"] is not None


def test_store_false_responses_are_not_retrievable(gateway, teacher):
    c = client(gateway)
    created = c.responses.create(model="gpt-4o-mini", input="Name a colour.", store=False)
    assert gateway.wait_rows("response_id = ?", (created.id,))[0]["stored"] == 0
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(created.id)


def test_a_chain_of_teacher_responses_goes_to_the_teacher_as_sent(gateway, teacher):
    c = client(gateway)
    first = c.responses.create(model="gpt-4o-mini", input="Name a colour.")
    second = c.responses.create(
        model="gpt-4o-mini", input="What is 2+2?", previous_response_id=first.id
    )
    assert second.output_text == "4" and second.previous_response_id == first.id
    sent = teacher.bodies("/v1/responses")[-1]
    assert sent["previous_response_id"] == first.id and sent["input"] == "What is 2+2?"
    with pytest.raises(openai.NotFoundError) as caught:
        c.responses.create(model="gpt-4o-mini", input="hi", previous_response_id="resp_unknown")
    assert caught.value.body["param"] == "previous_response_id"


def test_async_client_creates_streams_and_retrieves(gateway, teacher):
    async def run() -> tuple[str, str, str]:
        c = async_client(gateway)
        created = await c.responses.create(model="gpt-4o-mini", input="What is 2+2?")
        async with c.responses.stream(model="gpt-4o-mini", input="Name a colour.") as stream:
            final = await stream.get_final_response()
        fetched = await c.responses.retrieve(final.id)
        await c.close()
        return created.output_text, final.output_text, fetched.output_text

    assert asyncio.run(run()) == ("4", "blue", "blue")


def test_a_function_call_of_the_teacher_is_relayed_and_logged(gateway, teacher):
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    response = client(gateway).responses.create(
        model="gpt-4o-mini", input="Weather in Paris?", tools=[tool]
    )
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    row = gateway.wait_rows("response_id = ?", (response.id,))[0]
    assert json.loads(row["response_json"])["output"][0]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "gpt-4o-mini"}, "input"),
        ({"model": "gpt-4o-mini", "input": 3}, "input"),
        ({"model": "gpt-4o-mini", "input": "hi", "tools": "web"}, "tools"),
        ({"model": "gpt-4o-mini", "input": "hi", "temperature": 9}, "temperature"),
        ({"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_bad_input_gets_an_openai_shaped_error(gateway, teacher, body, param):
    sent_before = len(teacher.requests)
    r = httpx.post(gateway.base_url + "/responses", json=body, timeout=10)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}
    assert len(teacher.requests) == sent_before


def test_a_body_that_is_not_json_and_a_bad_listing_get_openai_shaped_errors(gateway, teacher):
    r = httpx.post(gateway.base_url + "/responses", content=b"{nope", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.delete(gateway.base_url + "/responses/resp_missing", timeout=10)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_export_writes_responses_exchanges_in_the_chat_fine_tuning_format(gateway, teacher):
    c = client(gateway)
    task = {"X-Understudy-Task": "mixed-export"}
    c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
        ],
        extra_headers=task,
    )
    first = c.responses.create(
        model="gpt-4o-mini", instructions="Be brief.", input="What is 2+2?", extra_headers=task
    )
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    second = c.responses.create(
        model="gpt-4o-mini",
        input="Weather in Paris?",
        tools=[tool],
        previous_response_id=first.id,
        extra_headers=task,
    )
    gateway.wait_rows("task = 'mixed-export'", count=3)
    out = gateway.data_dir.parent / "mixed.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "understudy.cli",
            "export",
            "--task",
            "mixed-export",
            "--data-dir",
            str(gateway.data_dir),
            "-o",
            str(out),
        ],
        cwd=ROOT,
        env=gateway.command_env(),
        check=True,
        timeout=60,
        capture_output=True,
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [ex["messages"] for ex in lines[:2]] == [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "blue"},
        ],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
        ],
    ]
    chained = lines[2]
    assert chained["messages"][:3] == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    (call,) = chained["messages"][3]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": second.output[0].arguments}
    assert chained["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]


def test_a_teacher_stream_cut_off_ends_with_a_typed_error_event_and_is_logged_cut(gateway, teacher):
    teacher.control(cut_stream_after=4)
    body = {"model": "gpt-4o-mini", "input": "Tell me a story.", "stream": True}
    with httpx.stream("POST", gateway.base_url + "/responses", json=body, timeout=30) as r:
        request_id = r.headers["x-request-id"]
        events = [line for line in r.iter_lines() if line.startswith(("event: ", "data: "))]
    assert events[0] == "event: response.created"
    assert events[-2] == "event: error"
    error = json.loads(events[-1].removeprefix("data: "))
    assert error["type"] == "error" and error["code"] == "teacher_unavailable"
    assert error["sequence_number"] == 4  # numbered after the last event relayed
    assert "[DONE]" not in "".join(events)
    row = gateway.row(request_id)
    assert row["status"] == "cut" and row["stream"] == 1
    assert json.loads(row["response_json"])["id"].startswith("resp_")
