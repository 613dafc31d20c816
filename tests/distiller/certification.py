"""Certifying a classical student as a run does, then routing the queries it has not seen.

Real data: the Banking77 test queries answered by a teacher (the replay benchmark's columns),
streamed in the order of the replay's seeds. Each certification test trains the student and
calibrates it as a run does, then routes every query the run had not seen with the stored
router; the tests are split over files so that ``pytest -n`` runs them at once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from bench._banking77 import label_names, read_csv
from understudy.distiller.calibrate import calibrate
from understudy.distiller.classical import read_label_agreement, train_classical
from understudy.distiller.config import GateConfig
from understudy.distiller.dataset import Example
from understudy.distiller.evaluate import ModelEval, evaluate_student
from understudy.distiller.generate import StudentRunner
from understudy.router import Router, RouterSpec
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
    trained: Path | None = None,
) -> list[tuple[int, float]]:
    """Train on ``logged`` and the first ``seen - held_out`` answers, calibrate on the next
    ``held_out`` (as a run does: cross-fitted when the training answers are few enough, with
    the label rates measured on the training examples, or, for each False in ``label_rates``,
    without them); for each, the number of unseen queries served and their agreement with the
    teacher. ``trained``: a student :func:`train_history` trained already (when ``seen ==
    held_out`` the student learns ``logged`` alone, the same whoever answers the stream)."""
    queries = stream(seed, teacher)
    train, held, unseen = (
        [*logged, *queries[: seen - held_out]],
        queries[seen - held_out : seen],
        queries[seen:],
    )
    student = trained or tmp_path / "student"
    if trained is None:
        settings = settings or ClassicalSettings()
        train_classical(examples(train), settings, student, held_out=examples(held))
    else:
        assert seen == held_out and settings is None, "the student learns more than the history"
    runner = StudentRunner(str(student))
    config = GateConfig(quality_target=TARGET)
    candidate = evaluate_student(runner, examples(held), [], kind="label", config=config)
    judged = evaluate_student(runner, examples(unseen), [], kind="label", config=config)
    outcomes = []
    for with_rates in label_rates:
        rates = read_label_agreement(student) if with_rates else None
        router = calibrate(
            candidate, "label", config, ranked_by_probability=True, label_rates=rates
        ).router
        served = routed(router, judged)
        outcomes.append((len(served), (sum(served) / len(served) if served else 1.0)))
    return outcomes


def train_history(path: Path, held_out: int, seed: int) -> Path:
    """The student of a run that has the history and ``held_out`` answers of the stream for
    ``seed``, all held out: trained on the history alone, with the product's settings."""
    held = stream(seed)[:held_out]
    train_classical(examples(history()), ClassicalSettings(), path, held_out=examples(held))
    return path


def routed(router: RouterSpec, judged: ModelEval) -> list[bool]:
    """Whether the student agreed with the teacher on each judged query ``router`` serves."""
    decide = Router(router.policy, router.threshold)
    return [
        agreed
        for agreed, features in zip(judged.agreed, judged.features, strict=True)
        if decide.decide(Features.from_dict(features)).serve
    ]
