"""Cross-fitting the classical student: the run's held-out answers train it too, and each is
still judged (and so certifies) only by a model that never saw it."""

from __future__ import annotations

import asyncio

import pytest

from tests.distiller.conftest import log_attempt, log_intents
from understudy.distiller.classical import classical_split, train_classical, use_folds
from understudy.distiller.config import DatasetConfig, DistillConfig, GateConfig, TrainConfig
from understudy.distiller.dataset import Dataset, Example, build_dataset, repeated
from understudy.distiller.evaluate import evaluate_student
from understudy.distiller.generate import StudentRunner
from understudy.distiller.pipeline import run_distillation
from understudy.storage.database import open_database
from understudy.student.base import StudentModel, StudentRequest
from understudy.student.classical import (
    ClassicalModel,
    ClassicalSettings,
    FoldedClassical,
    fold_of,
    load_classical,
)
from understudy.student.classical_backend import EngineSwitch

SYSTEM = "Classify the customer's message."


def example(i: int, text: str, label: str) -> Example:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return Example(str(i), float(i), label, messages=messages)


def labelled() -> list[Example]:
    phrases = {
        "card_arrival": ["my card has not arrived", "when will my new card come"],
        "refund": ["I want my money back", "please refund the purchase"],
        "top_up": ["add money to my account", "top up my balance"],
    }
    return [
        example(i, f"{phrase} {n}", label)
        for i, (label, texts) in enumerate(phrases.items())
        for n, phrase in enumerate(texts * 5)
    ]


def unique() -> list[Example]:
    """Held-out answers whose text and label occur nowhere else: only a model trained on one
    of them can give its label."""
    return [example(100 + i, f"zq{i}x blorp{i}", f"label_{i}") for i in range(40)]


def test_the_fold_of_a_text_never_changes():
    # Saved students are answered with the fold their held-out answers were left out of: a
    # different hash in a later version would answer them with models that trained on them.
    assert [fold_of(t, 5) for t in ("my card has not arrived", "I was charged twice", "")] == [
        4,
        1,
        0,
    ]
    assert fold_of("anything", 1) == 0


def test_each_held_out_answer_is_judged_by_the_one_model_that_never_saw_it(tmp_path):
    held = unique()
    train_classical(labelled(), ClassicalSettings(), tmp_path / "s", held_out=held)

    model = load_classical(tmp_path / "s")
    assert isinstance(model, FoldedClassical) and len(model.models) == 5
    for i in range(len(held)):
        own = fold_of(f"zq{i}x blorp{i}", 5)
        vocabularies = [m.vectorizers[0].vocabulary_ for m in model.models]
        assert f"zq{i}x" not in vocabularies[own]
        assert all(f"zq{i}x" in v for k, v in enumerate(vocabularies) if k != own)
    # Through a run's evaluation (system prompt first, as requests come): no held-out answer
    # gets its own label back, though four of the five models learnt it.
    judged = evaluate_student(
        StudentRunner(str(tmp_path / "s")),
        held,
        [],
        kind="label",
        config=GateConfig(quality_target=0.8),
        system_prompt=SYSTEM,
    )
    assert len(judged.agreed) == 40 and not any(judged.agreed)


def no_engine() -> EngineSwitch:
    raise AssertionError("a classical student needs no language-model engine")


def test_a_request_is_answered_by_its_folds_model_through_the_serving_backend(tmp_path):
    held = unique()
    train_classical(labelled(), ClassicalSettings(), tmp_path / "s", held_out=held)
    backend = EngineSwitch(no_engine)
    student = StudentModel(name="intent@v1", base=str(tmp_path / "s"))

    async def ask(text: str) -> str:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        answer = await backend.generate(StudentRequest(student, messages=messages, top_logprobs=3))
        return answer.text

    # A new request with a held-out text is answered without that answer's label (its fold's
    # model never saw it); a new text of a known intent gets that intent.
    assert asyncio.run(ask("zq3x blorp3")) != "label_3"
    assert asyncio.run(ask("my card has still not arrived")) == "card_arrival"


def test_many_training_answers_train_one_model_and_the_held_out_ones_only_certify(tmp_path):
    settings = ClassicalSettings(fold_max_train=20)
    assert use_folds(30, 40, settings) is False and use_folds(20, 40, settings) is True
    assert use_folds(20, 4, settings) is False  # fewer held-out answers than folds
    train_classical(labelled(), settings, tmp_path / "s", held_out=unique())
    assert isinstance(load_classical(tmp_path / "s"), ClassicalModel)
    train_classical(labelled(), ClassicalSettings(folds=1), tmp_path / "t", held_out=unique())
    assert isinstance(load_classical(tmp_path / "t"), ClassicalModel)


def test_a_fold_count_below_one_is_refused_at_start_up():
    with pytest.raises(ValueError, match=r"classical\.folds must be >= 1"):
        DistillConfig(classical=ClassicalSettings(folds=0)).validate()


def dataset_of(n_train: int, n_eval: int) -> Dataset:
    train = [example(i, f"message {i}", "refund") for i in range(n_train)]
    train[-1].source, train[-2].uniform = "correction", False  # never judge a student
    held = [example(n_train + i, f"message {n_train + i}", "refund") for i in range(n_eval)]
    return Dataset("intent", "label", train, held)


def test_a_cross_fitted_candidate_is_judged_on_held_out_min_answers_when_the_slice_is_smaller():
    dataset = dataset_of(400, 40)
    train, held = classical_split(dataset, ClassicalSettings(held_out_min=100))

    assert len(held) == 100 and len(train) == 340
    assert held[-40:] == dataset.eval  # the run's slice, and the newest uniform answers before it
    assert [ex.created_at for ex in held] == sorted(ex.created_at for ex in held)
    assert all(ex.uniform and ex.source == "teacher" for ex in held)
    assert dataset.train[-1] in train and dataset.train[-2] in train
    # At most half the log is held out; none beyond the slice without cross-fitting.
    assert len(classical_split(dataset, ClassicalSettings())[1]) == 220
    assert classical_split(dataset, ClassicalSettings(folds=1)) == (dataset.train, dataset.eval)
    small = ClassicalSettings(held_out_min=100, fold_max_train=300)
    assert classical_split(dataset, small) == (dataset.train, dataset.eval)
    assert classical_split(dataset, ClassicalSettings(held_out_min=0))[1] is dataset.eval


def test_a_log_of_a_few_thousand_answers_is_still_cross_fitted_and_judged_on_held_out_min():
    # Found: past 2,000 training answers a run trained one model and judged it on its own
    # slice alone (10% of the log): in the cold 3,080-query replay every run from the fifth
    # or sixth on was judged on 125-225 answers, where the run before had 500-624, and the
    # nine streams' later runs promoted 4 students (8 once cross-fitted, on 558-874 answers).
    # On a 6,000-answer log the certified share went from 0.39 (598 answers) to 0.68 (1,000).
    dataset = dataset_of(4400, 440)
    train, held = classical_split(dataset, ClassicalSettings())

    assert len(held) == 1000 and len(train) == 3840
    assert use_folds(len(train), len(held), ClassicalSettings())
    assert not use_folds(5001, 1000, ClassicalSettings())


def test_a_run_judges_its_classical_candidate_on_the_wider_held_out_set(tmp_path):
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, "intent", 400)
    config = DistillConfig(
        dataset=DatasetConfig(eval_fraction=0.1, eval_min=10, min_examples=40),
        train=TrainConfig(isolation="inline", candidates=["classical"]),
        classical=ClassicalSettings(held_out_min=150),
        gates=GateConfig(quality_target=0.9, min_calibration_examples=20),
    )

    outcome = run_distillation(tmp_path, "intent", config)

    assert outcome.dataset["eval"] == 40
    assert outcome.metrics["eval_examples"] == 150 == outcome.metrics["calibration_examples"]
    assert outcome.promoted, outcome.reason
    db.conn.close()


def test_a_failure_case_weighs_failure_weight_times_in_the_classical_fit(tmp_path):
    # Found: the run gave the candidate its rows already repeated by weight and the fit
    # repeated them again, so a failure case weighed failure_weight squared (9, not 3) and
    # its copies fell on both sides of the label rates' cross-validation.
    db = open_database(tmp_path / "understudy.db")
    ids = log_intents(db, "intent", 400)
    for request_id in ids[:60:3]:  # 20 answers the student got wrong: failure cases
        log_attempt(db, request_id, "intent", "wrong_label", "failure", agreed=False)
    config = DistillConfig(
        dataset=DatasetConfig(eval_fraction=0.1, eval_min=10, min_examples=40, failure_weight=3),
        train=TrainConfig(isolation="inline", candidates=["classical"]),
        gates=GateConfig(quality_target=0.9, min_calibration_examples=20),
    )
    dataset = build_dataset(db, "intent", config.dataset)
    train, held = classical_split(dataset, config.classical)
    assert sum(ex.failure for ex in train) == 20

    outcome = run_distillation(tmp_path, "intent", config)

    trained = outcome.metrics["train"]["examples"]
    assert trained == len(repeated(train)) + len(held) == len(train) + 2 * 20 + len(held)
    db.conn.close()
