"""A classical student (TF-IDF + logistic regression) served by a real gateway: the same
path, headers and wire shapes as a language-model student, chat and Responses, whole and
streamed, through the ``openai`` SDK; no language-model engine is loaded for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
from understudy.router import CalibratedPolicy, RouterSpec
from understudy.storage.registry import promote, register_model
from understudy.student.classical import ClassicalModel, ClassicalSettings, fold_of

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
    with gw.database() as db:  # MODEL-b: the same model, routed with label rates per fold
        router = fold_router(model, pairs)
        version = register_model(
            db, f"{TASK}-b", base="classical", model_path=str(path), router=router
        )
        promote(db, version.id)
    text, label = pairs[0]
    try:
        wait_until_student_serves(gw, text)
        yield gw, text, label
    finally:
        gw.stop()
        teacher.stop()


def sure(model: ClassicalModel, pairs: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """The texts the model answers right and far surer than its second choice, with their
    folds."""
    out = []
    for (text, label), top in zip(pairs, model.predict([t for t, _ in pairs]), strict=True):
        if top[0][0] == label and top[0][1] - top[1][1] > 0.95:
            out.append((text, fold_of(text, FOLDS)))
    return out


FOLDS = 5


def fold_router(model: ClassicalModel, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """A router whose label rates are 1 in the fold of the first sure text not in fold 0, and 0
    in every other fold: it serves that fold's answers and defers the rest."""
    served = next(fold for _, fold in sure(model, pairs) if fold != 0)
    policy = CalibratedPolicy(
        method="prior",
        fold_rates=((),) * FOLDS,
        fold_defaults=tuple(1.0 if k == served else 0.0 for k in range(FOLDS)),
    )
    return RouterSpec("label", policy=policy).to_dict()


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


def test_chat_and_responses_score_a_request_in_the_same_fold(gateway):
    # The fold is the one of the text the student read, whichever API asked: a Responses
    # request was once scored in the fold of an empty text (its body has no chat messages).
    gw = gateway[0]
    pairs = task_messages(200, seed=0)
    model = ClassicalModel.fit([t for t, _ in pairs], [label for _, label in pairs])
    texts = sure(model, pairs)
    served_fold = next(fold for _, fold in texts if fold != 0)
    served = [t for t, fold in texts if fold == served_fold][:2]
    deferred = [t for t, fold in texts if fold != served_fold][:2]
    model_b = f"{MODEL}-b"
    wait_until_student_serves(gw, served[0], model_b)
    for text, expected in [*((t, "student") for t in served), *((t, "teacher") for t in deferred)]:
        chat_raw = client(gw).chat.completions.with_raw_response.create(
            model=model_b, messages=chat(text)
        )
        responses_raw = client(gw).responses.with_raw_response.create(
            model=model_b, instructions=SYSTEM, input=text
        )
        assert chat_raw.headers["x-understudy-served-by"] == expected, text
        assert responses_raw.headers["x-understudy-served-by"] == expected, text
