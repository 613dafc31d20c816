"""The certified threshold holds on traffic it was not certified on.

Real data: the Banking77 test queries answered by GPT-4 (the replay benchmark's ``gpt-label``
column), streamed in the order of the replay's seed 1. In the cold 1,000-query replay, the
classical student of the first run (125 answers trained on, 125 held out) was certified at
0.8 on 25 held-out answers of which 24 agreed, and then served the stream at 0.758 agreement
(0.751 on all 2,830 queries it had not seen): the widest of many thresholds whose bound passed
was the luckiest, the bound was taken on 25 answers, and the policy that served was not the one
whose scores were certified. Each test trains the student and calibrates it as a run does, then
routes every query the run had not seen with the stored router.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from bench._banking77 import label_names, read_csv
from understudy.distiller.calibrate import calibrate
from understudy.distiller.classical import classical_split, read_label_agreement, train_classical
from understudy.distiller.config import GateConfig
from understudy.distiller.dataset import Dataset, Example
from understudy.distiller.evaluate import evaluate_student
from understudy.distiller.generate import StudentRunner
from understudy.router import Router
from understudy.router.features import Features
from understudy.student.classical import ClassicalSettings

TARGET = 0.8
MISS = 0.01
"""Served agreement this far below the target is a miss (as bench/replay.py counts it)."""


def stream(seed: int, teacher: str = "gpt-label") -> list[tuple[str, str]]:
    """The test queries with ``teacher``'s answers (GPT-4's by default), in the replay's order
    for ``seed``."""
    names = label_names()
    rows = read_csv("test.csv")
    random.Random(seed + 1).shuffle(rows)  # understudy.demo.banking77.sample(test, n, seed + 1)
    return [(r["text"], names.get(r[teacher], "unknown")) for r in rows]


def examples(pairs: list[tuple[str, str]]) -> list[Example]:
    return [
        Example(str(i), float(i), answer, messages=[{"role": "user", "content": text}])
        for i, (text, answer) in enumerate(pairs)
    ]


def history() -> list[tuple[str, str]]:
    """The 9,002 train queries with their gold labels (the replay's logged history)."""
    names = label_names()
    return [(r["text"], names[r["label"]]) for r in read_csv("train.csv")]


def certify_and_serve(
    tmp_path: Path,
    seen: int,
    held_out: int,
    seed: int,
    logged: Sequence[tuple[str, str]] = (),
    *,
    teacher: str = "gpt-label",
    label_rates: Sequence[bool] = (True,),
    settings: ClassicalSettings | None = None,
) -> list[tuple[int, float]]:
    """Train on ``logged`` and the first ``seen - held_out`` answers, calibrate on the next
    ``held_out`` (as a run does: cross-fitted when the training answers are few enough, with
    the label rates measured on the training examples, or, for each False in ``label_rates``,
    without them); for each, the number of unseen queries served and their agreement with the
    teacher."""
    queries = stream(seed, teacher)
    train, held, unseen = (
        [*logged, *queries[: seen - held_out]],
        queries[seen - held_out : seen],
        queries[seen:],
    )
    settings = settings or ClassicalSettings()
    train_classical(examples(train), settings, tmp_path / "student", held_out=examples(held))
    runner = StudentRunner(str(tmp_path / "student"))
    config = GateConfig(quality_target=TARGET)
    candidate = evaluate_student(runner, examples(held), [], kind="label", config=config)
    judged = evaluate_student(runner, examples(unseen), [], kind="label", config=config)
    outcomes = []
    for with_rates in label_rates:
        rates = read_label_agreement(tmp_path / "student") if with_rates else None
        router = calibrate(
            candidate, "label", config, ranked_by_probability=True, label_rates=rates
        ).router
        decide = Router(router.policy, router.threshold)
        served = [
            agreed
            for agreed, features in zip(judged.agreed, judged.features, strict=True)
            if decide.decide(Features.from_dict(features)).serve
        ]
        outcomes.append((len(served), (sum(served) / len(served) if served else 1.0)))
    return outcomes


def test_the_first_cold_student_is_not_certified_on_a_lucky_handful(tmp_path):
    [(served, agreement)] = certify_and_serve(tmp_path, seen=250, held_out=125, seed=1)
    assert agreement >= TARGET - MISS, f"served {served} unseen queries at {agreement:.3f}"


def test_a_cold_student_is_certified_after_500_answers_when_the_held_out_ones_also_train(
    tmp_path,
):
    # The cold 1,000-query replay (a run every 250 teacher answers, the newest 250 held out)
    # promoted nothing before 750 answers: at 500, one model trained on 250 answers and
    # certified on 250 certified nothing. Cross-fitted, five models each train on the 250 and
    # four fifths of the held-out answers, and each held-out answer is judged by the model
    # that never saw it: all 250 still certify.
    [(served, agreement)] = certify_and_serve(tmp_path, seen=500, held_out=250, seed=1)
    assert served > 0.15 * (3080 - 500), f"served {served} unseen queries"
    assert agreement >= TARGET - MISS, f"served {served} unseen queries at {agreement:.3f}"


def test_a_student_trained_on_the_history_serves_much_of_the_stream_at_the_target(tmp_path):
    # The short stream's first run: the history trains, 250 teacher answers certify.
    [(served, agreement)] = certify_and_serve(tmp_path, 250, 250, 1, history())
    assert served > 0.3 * (3080 - 250)
    assert agreement >= TARGET - MISS, f"served {served} unseen queries at {agreement:.3f}"


def test_label_rates_serve_more_of_a_weaker_teachers_stream_at_the_target(tmp_path):
    # GPT-3.5's answers (0.75 against gold): a student trained on 2,080 of them, certified on
    # the next 250, routing the 750 others. Ranked by its probability alone it served 612 at
    # 0.822; knowing how often the teacher gave each label it answers (cross-validated on the
    # training answers, never on the certifying ones) ranks the labels this teacher is unsure
    # of lower: 647 served at 0.822.
    # One student, calibrated both ways: one model (a run on this log cross-fits it and
    # certifies it on 1,000 answers; cross-fitted and certified on these 250, it served 630
    # without the rates and 619 with them).
    (without, _), (served, agreement) = certify_and_serve(
        tmp_path,
        2330,
        250,
        1,
        teacher="gpt35-label_rep",
        label_rates=(False, True),
        settings=ClassicalSettings(folds=1),
    )
    assert served >= without + 20, f"{served} served with label rates, {without} without"
    assert agreement >= TARGET - MISS, f"served {served} unseen queries at {agreement:.3f}"


def test_the_teachers_own_history_certifies_a_cross_fitted_student_for_more_of_the_stream(
    tmp_path,
):
    # The short stream with the teacher's own history (GPT-4's other-prompt answers to the
    # 2,080 test queries outside the stream, then 250 live answers held out): one model on
    # the history, certified on the 250, served 329 of the 750 unseen queries. Certified on
    # the newest 1,000 (cross-fitted: each judged by the fold model that never saw it, and
    # still training the four others), it serves 490, at 0.861 agreement.
    teacher = "gpt4-label_nonrep"
    queries = stream(0, teacher)
    live, logged = queries[:1000], queries[1000:]
    seen = examples([*logged, *live[:250]])
    dataset = Dataset("banking77", "label", seen[:-250], seen[-250:])

    train, held = classical_split(dataset, ClassicalSettings())
    assert len(held) == 1000
    train_classical(train, ClassicalSettings(), tmp_path / "student", held_out=held)
    runner = StudentRunner(str(tmp_path / "student"))
    config = GateConfig(quality_target=TARGET)
    candidate = evaluate_student(runner, held, [], kind="label", config=config)
    judged = evaluate_student(runner, examples(live[250:]), [], kind="label", config=config)
    rates = read_label_agreement(tmp_path / "student")
    router = calibrate(candidate, "label", config, ranked_by_probability=True, label_rates=rates)
    decide = Router(router.router.policy, router.router.threshold)
    served = [
        agreed
        for agreed, features in zip(judged.agreed, judged.features, strict=True)
        if decide.decide(Features.from_dict(features)).serve
    ]
    assert len(served) >= 400, f"served {len(served)} of 750"
    assert sum(served) / len(served) >= TARGET - MISS
