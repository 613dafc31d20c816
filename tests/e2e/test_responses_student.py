"""The Responses API served by a distilled student: whole and streamed answers the official
SDK's ``client.responses.stream()`` accepts, stored state answered from the gateway's log,
``previous_response_id`` chains across teacher and student turns (the teacher receiving the
chain expanded, never an id it did not issue), and the OpenAI Agents SDK running a tool-using
agent through the gateway before and after a student is promoted for its task.

Whether the student is sure of a turn that follows earlier turns is measured with the serving
code itself (the same generator and router), as ``student_fixtures`` does for single turns.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.student_fixtures import (
    MODEL,
    SYSTEM,
    TASK,
    THRESHOLD,
    Student,
    gateway_config,
    log_teacher_traffic,
    start_gateway,
    start_teacher,
    teacher_table,
    train_student,
    wait_until_student_serves,
)
from tests.e2e.test_student_routing import serve_same_student
from tests.gateway_process import GatewayProcess
from tests.teacher_stub import StubTeacher
from understudy.student.conversation import response_text

pytestmark = pytest.mark.slow

AGENT_MODEL = f"{MODEL}-b"  # routed to a task with no student until the agent test promotes one
WEATHER = "Weather in Paris?"
WEB_SEARCH = [{"type": "web_search_preview"}]  # a built-in tool: the teacher's by rule


@pytest.fixture(scope="module")
def table_teacher() -> Iterator[StubTeacher]:
    teacher = start_teacher()
    try:
        yield teacher
    finally:
        teacher.stop()


@pytest.fixture(scope="module")
def served(
    table_teacher: StubTeacher, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, Student]]:
    """A gateway whose student serves ``TASK`` and may answer requests offering tools."""
    data_dir = tmp_path_factory.mktemp("responses-student") / "data"
    config = gateway_config().replace("[student]\n", "[student]\ntools = true\n")
    gateway = start_gateway(table_teacher, data_dir, config)
    try:
        log_teacher_traffic(gateway)
        student = train_student(data_dir)
        wait_until_student_serves(gateway, student.confident[0].text)
        yield gateway, student
    finally:
        gateway.stop()


@pytest.fixture(autouse=True)
def teacher(table_teacher: StubTeacher) -> StubTeacher:
    table_teacher.control(reset=True)
    weather = {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    table_teacher.table = {**teacher_table(), WEATHER: weather}
    table_teacher.clear()
    return table_teacher


class Recorder:
    """The headers of every response the gateway sent a client, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def sync(self, response: httpx.Response) -> None:
        self.seen.append((response.request.method, response.url.path, dict(response.headers)))

    async def hook(self, response: httpx.Response) -> None:
        self.sync(response)

    def served_by(self) -> list[str]:
        return [h["x-understudy-served-by"] for m, p, h in self.seen if p.endswith("/responses")]


def client(gateway: GatewayProcess, recorder: Recorder | None = None) -> openai.OpenAI:
    hooks = {"response": [recorder.sync]} if recorder else {}
    return openai.OpenAI(
        base_url=gateway.base_url,
        api_key="sk-client",
        max_retries=0,
        http_client=httpx.Client(event_hooks=hooks, timeout=60),
    )


def judged(student: Student, conversations: list[list[dict[str, str]]]) -> list[tuple[str, float]]:
    """(answer, confidence) of the served student for each chat conversation."""
    from understudy.gateway.serving.routing import TaskRouter
    from understudy.router.config import RouterConfig
    from understudy.student.base import StudentModel, StudentRequest
    from understudy.student.generation import load_generator

    generator = load_generator(student.model_path, None, "cpu")
    router = TaskRouter(
        student.router, RouterConfig(threshold_mode="fixed", fixed_threshold=THRESHOLD)
    )
    model = StudentModel(name=student.version, base=student.model_path)
    requests = [StudentRequest(model, messages=m, max_tokens=256) for m in conversations]
    answers = generator.generate(requests)
    return [(a.text, router.judge(a, {}).confidence) for a in answers]


def rows_of(gateway: GatewayProcess, response_id: str) -> dict[str, Any]:
    return gateway.wait_rows("response_id = ?", (response_id,))[0]


# -- served by the student ---------------------------------------------------------------


def test_the_student_answers_a_responses_request_whole(served, teacher):
    gateway, student = served
    probe = student.confident[0]
    raw = client(gateway).responses.with_raw_response.create(
        model=MODEL, instructions=SYSTEM, input=probe.text
    )
    response = raw.parse()
    assert raw.headers["x-understudy-served-by"] == "student"
    assert raw.headers["x-understudy-student-version"] == f"{TASK}@v1"
    assert float(raw.headers["x-understudy-confidence"]) >= THRESHOLD
    assert response.output_text == probe.teacher and response.model == MODEL
    assert response.id.startswith("resp_") and response.status == "completed"
    (message,) = response.output
    assert message.type == "message" and message.id.startswith("msg_")
    assert response.usage.output_tokens >= 1
    assert teacher.bodies("/v1/responses") == []

    row = gateway.row(raw.headers["x-request-id"])
    assert (row["served_by"], row["endpoint"], row["task"]) == ("student", "responses", TASK)
    assert row["response_id"] == response.id and row["stored"] == 1
    assert row["prompt_tokens"] == response.usage.input_tokens
    assert row["completion_tokens"] == response.usage.output_tokens
    assert row["avoided_cost_usd"] > 0


def test_the_student_streams_the_full_typed_event_sequence(served, teacher):
    gateway, student = served
    probe = student.confident[1]
    recorder = Recorder()
    with client(gateway, recorder).responses.stream(
        model=MODEL, instructions=SYSTEM, input=probe.text
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == final.output_text == probe.teacher
    assert recorder.served_by() == ["student"]
    row = rows_of(gateway, final.id)
    assert row["served_by"] == "student" and row["stream"] == 1
    assert json.loads(row["response_json"])["output"][0]["content"][0]["text"] == probe.teacher
    assert teacher.bodies("/v1/responses") == []


def test_a_student_answer_is_retrieved_listed_and_deleted_from_the_log(served, teacher):
    gateway, student = served
    c = client(gateway)
    created = c.responses.create(model=MODEL, instructions=SYSTEM, input=student.confident[2].text)
    assert rows_of(gateway, created.id)["served_by"] == "student"
    fetched = c.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    items = c.responses.input_items.list(created.id)
    assert [i.content[0].text for i in items.data] == [student.confident[2].text]
    with pytest.raises(openai.BadRequestError) as bad:
        c.responses.input_items.list(created.id, limit=0)
    assert bad.value.body["param"] == "limit"
    assert c.responses.delete(created.id) is None
    assert rows_of(gateway, created.id)["deleted_at"] is not None
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        c.responses.create(model=MODEL, input="and then?", previous_response_id=created.id)
    assert caught.value.body["param"] == "previous_response_id"
    unstored = c.responses.create(
        model=MODEL, instructions=SYSTEM, input=student.confident[3].text, store=False
    )
    assert rows_of(gateway, unstored.id)["served_by"] == "student"
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(unstored.id)
    assert [r["path"] for r in teacher.requests if r["method"] != "POST"] == []


def test_requests_the_student_may_not_answer_go_to_the_teacher(served, teacher):
    gateway, student = served
    c = client(gateway)
    text = student.confident[0].text
    for extra in ({"tools": WEB_SEARCH}, {"background": True}, {"tool_choice": "required"}):
        raw = c.responses.with_raw_response.create(
            model=MODEL, instructions=SYSTEM, input=text, **extra
        )
        assert raw.headers["x-understudy-served-by"] == "teacher", extra
        row = gateway.row(raw.headers["x-request-id"])
        assert row["route_reason"].startswith("teacher: "), row["route_reason"]


def test_a_chain_teacher_student_teacher_reaches_the_teacher_expanded(served, teacher):
    gateway, student = served
    first_text = student.uncertain[0].text
    table = teacher_table()
    history = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": first_text},
        {"role": "assistant", "content": table[first_text]},
    ]
    candidates = [p for p in student.confident if p.text != first_text]
    verdicts = judged(
        student, [[*history, {"role": "user", "content": p.text}] for p in candidates]
    )
    sure = [
        p
        for p, (answer, confidence) in zip(candidates, verdicts, strict=True)
        if confidence >= THRESHOLD + 0.05 and answer == p.teacher
    ]
    assert sure, f"the student is sure of no message after one turn: {verdicts}"

    recorder = Recorder()
    c = client(gateway, recorder)
    first = c.responses.create(model=MODEL, instructions=SYSTEM, input=first_text, tools=WEB_SEARCH)
    second = c.responses.create(
        model=MODEL, instructions=SYSTEM, input=sure[0].text, previous_response_id=first.id
    )
    third = c.responses.create(
        model=MODEL,
        instructions="Answer in one word.",
        input="Name a colour.",
        previous_response_id=second.id,
        tools=WEB_SEARCH,
    )
    assert recorder.served_by() == ["teacher", "student", "teacher"]
    assert second.output_text == sure[0].teacher and third.output_text == "ok: Name a colour."
    # The student's turn is expanded; the teacher's own first turn stays chained by its id.
    sent = teacher.bodies("/v1/responses")[-1]
    assert sent["previous_response_id"] == first.id
    assert sent["instructions"] == "Answer in one word."
    assert _texts(sent["input"]) == [
        ("user", sure[0].text),
        ("assistant", second.output_text),
        ("user", "Name a colour."),
    ]
    assert second.id not in json.dumps(sent) and second.output[0].id not in json.dumps(sent)
    # The client sees the chain it sent, not the one the teacher got (it said first.id).
    assert third.previous_response_id == second.id
    # A chain whose newest turn is the teacher's goes on by id, as sent (a built-in tool keeps
    # this turn with the teacher: the student may be sure of it otherwise).
    fourth = c.responses.create(
        model=MODEL, input="Name a colour.", previous_response_id=third.id, tools=WEB_SEARCH
    )
    assert recorder.served_by()[-1] == "teacher"
    assert teacher.bodies("/v1/responses")[-1]["previous_response_id"] == third.id
    assert fourth.output_text == "ok: Name a colour."


def test_a_chain_that_starts_with_the_student_reaches_the_teacher_whole(served, teacher):
    gateway, student = served
    probe = student.confident[0]
    c = client(gateway)
    first = c.responses.create(model=MODEL, instructions=SYSTEM, input=probe.text)
    assert rows_of(gateway, first.id)["served_by"] == "student"
    second = c.responses.create(
        model=MODEL, input="Name a colour.", previous_response_id=first.id, tools=WEB_SEARCH
    )
    assert second.output_text == "ok: Name a colour."
    sent = teacher.bodies("/v1/responses")[-1]
    assert "previous_response_id" not in sent and "instructions" not in sent
    assert _texts(sent["input"]) == [
        ("user", probe.text),
        ("assistant", probe.teacher),
        ("user", "Name a colour."),
    ]
    assert first.id not in json.dumps(sent)
    # The answer names the response the client chained to (the teacher was sent none; it said
    # null), whole and streamed.
    assert second.previous_response_id == first.id
    with c.responses.stream(
        model=MODEL, input="Name a colour.", previous_response_id=first.id, tools=WEB_SEARCH
    ) as stream:
        streamed = [e for e in stream if getattr(e, "response", None) is not None]
    assert streamed and {e.response.previous_response_id for e in streamed} == {first.id}


def _texts(items: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(item.get("role"), _text(item)) for item in items]


def _text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])


# -- the OpenAI Agents SDK -----------------------------------------------------------------


def test_an_agent_with_a_function_tool_runs_through_teacher_and_student(served, teacher):
    from agents import (
        Agent,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    gateway, student = served
    set_tracing_disabled(True)
    recorder = Recorder()
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    async def conversation() -> list[Any]:
        api = openai.AsyncOpenAI(
            base_url=gateway.base_url,
            api_key="sk-client",
            max_retries=0,
            http_client=httpx.AsyncClient(event_hooks={"response": [recorder.hook]}, timeout=60),
        )
        agent = Agent(
            name="banking",
            instructions=SYSTEM,
            model=OpenAIResponsesModel(AGENT_MODEL, api),
            tools=[get_weather],
        )
        # The weather turn must call the tool: a required call is the teacher's by rule.
        weather_agent = agent.clone(model_settings=ModelSettings(tool_choice="get_weather"))
        results = []
        first = await Runner.run(agent, student.confident[0].text, auto_previous_response_id=True)
        results.append(first)
        second = await Runner.run(
            weather_agent, WEATHER, previous_response_id=first.last_response_id
        )
        results.append(second)
        third = await Runner.run(
            agent, student.confident[1].text, previous_response_id=second.last_response_id
        )
        results.append(third)
        await api.close()
        return results

    before = asyncio.run(conversation())
    assert set(recorder.served_by()) == {"teacher"}
    assert before[0].final_output == student.confident[0].teacher
    assert calls == ["Paris"] and before[1].final_output == "Done: sunny in Paris"
    assert before[2].final_output == student.confident[1].teacher

    serve_same_student(gateway, f"{TASK}-b", student)
    wait_until_student_serves(gateway, student.confident[0].text, AGENT_MODEL)
    recorder.seen.clear()
    calls.clear()
    after = asyncio.run(conversation())
    turns = [h for m, p, h in recorder.seen if p.endswith("/responses")]
    served_by = [h["x-understudy-served-by"] for h in turns]
    assert served_by[0] == "student"  # a fresh conversation the student is sure of
    assert served_by[1] == "teacher"  # the required tool call
    assert calls == ["Paris"]
    for headers in turns:
        row = gateway.row(headers["x-request-id"])
        assert row["served_by"] == headers["x-understudy-served-by"]
        assert row["endpoint"] == "responses" and row["task"] == f"{TASK}-b"
    assert after[0].final_output == student.confident[0].teacher
    for result in after:  # each run ends on the answer its last response logged
        last = rows_of(gateway, result.last_response_id)
        assert result.final_output == response_text(json.loads(last["response_json"]))
    # The teacher was only ever pointed at its own responses (it answers 404 otherwise).
    for body in teacher.bodies("/v1/responses"):
        previous = body.get("previous_response_id")
        assert previous is None or rows_of(gateway, previous)["served_by"] == "teacher"
