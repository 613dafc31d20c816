"""The classical candidate: trained and judged in a run like any other, served through the
same interface as the language-model students."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.distiller.conftest import INTENTS, SYSTEM, intent_messages, log_exchange, log_intents
from understudy.distiller.classical import LABEL_AGREEMENT
from understudy.distiller.config import DatasetConfig, DistillConfig, GateConfig, TrainConfig
from understudy.distiller.pipeline import run_distillation
from understudy.router import extract_features, normalise_label
from understudy.storage.database import open_database
from understudy.storage.registry import champion
from understudy.student.base import StudentModel, StudentRequest
from understudy.student.classical import ClassicalModel, ClassicalSettings, is_classical
from understudy.student.classical_backend import EngineSwitch

TASK = "intent"


def config(**train) -> DistillConfig:
    return DistillConfig(
        dataset=DatasetConfig(eval_fraction=0.25, eval_min=10, min_examples=40),
        train=TrainConfig(isolation="inline", **({"candidates": ["classical"]} | train)),
        gates=GateConfig(quality_target=0.9, min_calibration_examples=20),
    )


def test_a_label_task_gets_a_classical_student_that_passes_the_gates(tmp_path):
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, TASK, 400)

    outcome = run_distillation(tmp_path, TASK, config())

    assert outcome.promoted, outcome.reason
    assert outcome.metrics["engine"] == "classical"
    assert outcome.metrics["train"]["seconds"] < 60
    assert outcome.metrics["candidates"]["classical"]["passed"]
    model = champion(db, TASK)
    assert model.base == "classical" and is_classical(model.model_path)
    assert Path(model.model_path) == tmp_path / "models" / TASK / "v1"
    assert model.router["threshold"]["agreement_lower_bound"] >= 0.9
    saved = json.loads((Path(model.model_path) / "classical.json").read_text())
    assert saved["engine"] == "classical" and saved["folds"] == 5  # cross-fitted: few answers
    fold = json.loads((Path(model.model_path) / "fold-0" / "classical.json").read_text())
    assert len(fold["labels"]) >= 2
    db.conn.close()


def test_after_the_teacher_model_changed_the_earlier_ones_answers_certify_nothing(tmp_path):
    # The teacher model changed while a student served: the new one's first answers are
    # deferrals, never drawn regardless of the router. The earlier teacher's answers were held
    # out instead, and certified a student against a teacher the traffic no longer gets.
    db = open_database(tmp_path / "understudy.db")
    for i, (text, label) in enumerate(intent_messages(400)):
        log_exchange(db, TASK, text, label, at=1000 + i, teacher_model="gpt-4-0613")
    for i, (text, label) in enumerate(intent_messages(5, seed=1)):
        reason = "deferred: below_threshold"
        log_exchange(db, TASK, text, label, at=2000 + i, route_reason=reason, teacher_model="b")

    outcome = run_distillation(tmp_path, TASK, config())

    assert not outcome.promoted and champion(db, TASK) is None
    assert outcome.status == "skipped"
    assert outcome.reason == (
        "no held-out answer to certify a student on: no answer of the live teacher (b) drawn"
        " regardless of the router yet"
    )
    assert outcome.dataset["uniform_other_teachers"] == 400
    db.conn.close()


def test_the_router_of_a_classical_student_knows_how_often_the_teacher_gave_each_label(tmp_path):
    # Measured by cross-validation on the training examples alone: the held-out examples the
    # threshold is certified on never choose the order they are tested in.
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, TASK, 400)

    outcome = run_distillation(tmp_path, TASK, config())

    assert outcome.promoted, outcome.reason
    policy = champion(db, TASK).router["policy"]
    rates = policy["label_rates"]
    assert set(rates) == {normalise_label(label) for label in INTENTS}
    assert all(0 < rate <= 1 for rate in rates.values()) and 0 < policy["label_default"] <= 1
    measured = json.loads((Path(champion(db, TASK).model_path) / LABEL_AGREEMENT).read_text())
    assert measured["n"] == 400 - outcome.metrics["eval_examples"]
    db.conn.close()


def test_a_label_the_teacher_gives_inconsistently_gets_a_lower_rate():
    # The teacher answers "top_up" messages with top_up or with dispute at random (a label a
    # deployment's teacher is unsure of); the student's "top_up" agrees with it half the time.
    import random

    from understudy.distiller.classical import label_agreement
    from understudy.distiller.dataset import Example

    rng = random.Random(0)
    pairs = [(text, label) for text, label in intent_messages(240)]
    pairs = [
        (text, rng.choice(["top_up", "dispute"]) if label == "top_up" else label)
        for text, label in pairs
    ]
    examples = [
        Example(str(i), float(i), label, messages=[{"role": "user", "content": text}])
        for i, (text, label) in enumerate(pairs)
    ]

    measured = label_agreement(examples, ClassicalSettings())

    assert measured is not None and measured.n == len(examples)
    assert measured.rates["top_up"] < 0.75 < measured.rates["card_arrival"]
    assert label_agreement(examples[:20], ClassicalSettings()) is None


def test_a_free_text_task_trains_no_classical_candidate(tmp_path):
    from understudy.distiller.dataset import Dataset, Example
    from understudy.distiller.pipeline import _engines

    texts = [Example(str(i), float(i), f"a long free answer number {i}") for i in range(50)]
    cfg = config(candidates=["classical", "model"])
    assert _engines(cfg, Dataset(TASK, "text", texts, [])) == ["model"]
    labels = [Example(str(i), float(i), f"label_{i % 3}") for i in range(50)]
    assert _engines(cfg, Dataset(TASK, "label", labels, [])) == ["classical", "model"]
    cfg.classical.max_labels = 2
    assert _engines(cfg, Dataset(TASK, "label", labels, [])) == ["model"]


def test_the_classical_engine_answers_with_its_class_probabilities_as_router_features(tmp_path):
    pairs = intent_messages(200)
    model = ClassicalModel.fit([t for t, _ in pairs], [label for _, label in pairs])
    path = model.save(tmp_path / "m", ClassicalSettings())
    backend = EngineSwitch(lambda: pytest.fail("no language-model engine for a classical one"))
    student = StudentModel(name="intent@v1", base=str(path))
    text, label = pairs[0]
    request = StudentRequest(
        student, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    )

    async def ask():
        await backend.load(student)
        return await backend.generate(request)

    answer = asyncio.run(ask())

    assert answer.text == label and answer.finish_reason == "stop"
    probs = [round(2.718281828**alt.logprob, 6) for alt in answer.top_logprobs[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert answer.latency_ms < 50
    features = extract_features(
        answer.logprobs, [alt.logprob for alt in answer.top_logprobs[0]], answer.text
    )
    assert features.mean_token_prob == pytest.approx(probs[0], abs=1e-5)
    assert features.first_token_margin == pytest.approx(probs[0] - probs[1], abs=1e-5)


def test_a_labels_own_words_teach_the_classical_student_what_it_means(tmp_path):
    # Two answers per label, none of them in the label's words: a request worded like a label
    # is answered with it only when the labels' words train too (a cold start: the first
    # few hundred answers leave most labels with a handful of examples).
    from understudy.distiller.classical import train_classical
    from understudy.distiller.dataset import Example

    asked = {
        "card_arrival": ["where is the thing you posted me", "still waiting on my parcel"],
        "exchange_rate": ["how much is a dollar worth", "what do I get for my euros"],
        "top_up_failed": ["adding money did not work", "my deposit bounced"],
    }
    examples = [
        Example(f"{label}-{i}", float(i), label, messages=[{"role": "user", "content": text}])
        for label, texts in asked.items()
        for i, text in enumerate(texts)
    ]
    queries = ["card arrival", "the exchange rate", "my top up failed"]
    answers = {}
    for n in (0, 1):
        settings = ClassicalSettings(label_examples=n)
        train_classical(examples, settings, tmp_path / str(n))
        model = ClassicalModel.load(tmp_path / str(n))
        answers[n] = [top[0][0] for top in model.predict(queries, top_k=1)]
    assert answers[1] == ["card_arrival", "exchange_rate", "top_up_failed"]
    assert answers[0] != answers[1]


def test_held_out_rates_show_where_the_live_teacher_differs_never_from_the_answer_itself():
    from understudy.distiller.classical import RATE_FOLDS, LabelAgreement, held_out_rates

    # The training answers (another labeller) agreed on "a" 0.9 of the time; on the held-out
    # answers, the live teacher gives "a" back only half the time.
    prior = LabelAgreement({"a": 0.9, "b": 0.9}, 0.9, 100)
    features = [{"label": "a", "fold": i % RATE_FOLDS} for i in range(50)]
    agreed = [i % 2 == 0 for i in range(50)]
    rates, defaults = held_out_rates(features, agreed, [1.0] * 50, prior)
    assert all(0.45 < r["a"] < 0.6 for r in rates)  # 20 of the other folds' 40, and the prior
    assert all(r["b"] == 0.9 for r in rates)  # no evidence: the training rate
    # Flipping one answer moves the rates of every fold but its own.
    flipped = list(agreed)
    flipped[7] = not flipped[7]
    after, _ = held_out_rates(features, flipped, [1.0] * 50, prior)
    own = features[7]["fold"]
    assert after[own] == rates[own]
    assert all(after[k] != rates[k] for k in range(RATE_FOLDS) if k != own)
    assert len(defaults) == RATE_FOLDS
    assert held_out_rates([{"label": "a"}], [True], [1.0], prior) is None  # no fold: not used
