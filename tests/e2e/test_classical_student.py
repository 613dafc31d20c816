"""A classical student (TF-IDF + logistic regression) served by a real gateway: the same
path, headers and wire shapes as a language-model student, chat and Responses, whole and
streamed, through the ``openai`` SDK; no language-model engine is loaded for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.student_fixtures import (
    MODEL,
    SYSTEM,
    TASK,
    chat,
    client,
    gateway_config,
    start_gateway,
    start_teacher,
    task_messages,
    wait_until_student_serves,
)
from tests.gateway_process import GatewayProcess
from understudy.storage.registry import promote, register_model
from understudy.student.classical import ClassicalModel, ClassicalSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    teacher = start_teacher()
    data_dir = tmp_path_factory.mktemp("classical") / "data"
    gw = start_gateway(teacher, data_dir, gateway_config())
    pairs = task_messages(200, seed=0)
    model = ClassicalModel.fit([t for t, _ in pairs], [label for _, label in pairs])
    path = model.save(data_dir / "models" / TASK / "v1", ClassicalSettings())
    with gw.database() as db:
        version = register_model(db, TASK, base="classical", model_path=str(path))
        promote(db, version.id)
    text, label = pairs[0]
    try:
        wait_until_student_serves(gw, text)
        yield gw, text, label
    finally:
        gw.stop()
        teacher.stop()


def test_chat_whole_and_streamed(gateway):
    gw, text, label = gateway
    raw = client(gw).chat.completions.with_raw_response.create(model=MODEL, messages=chat(text))
    completion = raw.parse()
    assert raw.headers["x-understudy-served-by"] == "student"
    assert raw.headers["x-understudy-student-version"] == f"{TASK}@v1"
    assert 0.8 <= float(raw.headers["x-understudy-confidence"]) <= 1
    assert completion.choices[0].message.content == label
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 1

    stream = client(gw).chat.completions.create(
        model=MODEL, messages=chat(text), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text_out == label
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 1
    assert "torch" not in gw.output()  # no language-model engine was built


def test_responses_whole_and_streamed(gateway):
    gw, text, label = gateway
    raw = client(gw).responses.with_raw_response.create(
        model=MODEL, instructions=SYSTEM, input=text
    )
    response = raw.parse()
    assert raw.headers["x-understudy-served-by"] == "student"
    assert response.output_text == label and response.status == "completed"

    events = list(
        client(gw).responses.create(model=MODEL, instructions=SYSTEM, input=text, stream=True)
    )
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == label
