"""The classical candidate of a run: TF-IDF + logistic regression on label-shaped tasks.

Trained and evaluated in the run's own process (seconds, no torch), on the same training,
held-out and golden examples as the language-model candidate, and judged by the same gates.
Unlike that candidate it is cheap enough to be cross-fitted (``[distiller.classical] folds``):
one model per fold of the held-out answers, trained on the training answers and the other
folds, so that the held-out answers train as well as certify.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from understudy.distiller.dataset import Dataset, Example, repeated, widened
from understudy.distiller.train import TrainResult
from understudy.router import normalise_label
from understudy.student.classical import (
    ClassicalModel,
    ClassicalSettings,
    FoldedClassical,
    fold_of,
    label_words,
    prompt_text,
)

log = logging.getLogger("understudy.distiller")

ENGINE = "classical"
BASE = "classical"
"""The base recorded in the registry for a classical student."""
LABEL_AGREEMENT = "label_agreement.json"
"""The file, beside the model, of how often the teacher agreed with each label it gives."""
FOLDS = 3
"""Folds of the cross-validation that measures each label's agreement on the training
examples (each fold's examples answered by a model trained on the others)."""
MIN_FOLD_EXAMPLES = 30
"""Fewest training examples for that measure; with fewer, no label rates."""
MAX_FOLD_EXAMPLES = 4000
"""Most training examples that measure reads (the newest): on a 9,000-answer log the three
folds' fits would take longer than the model's own."""


def fits(dataset: Dataset, settings: ClassicalSettings) -> bool:
    """Whether the task is label-shaped: a label kind, with 2 to ``max_labels`` answers."""
    if dataset.kind != "label":
        return False
    labels = {ex.answer for ex in dataset.train}
    return 2 <= len(labels) <= settings.max_labels


def train_classical(
    examples: Sequence[Example],
    settings: ClassicalSettings,
    out_dir: Path,
    *,
    seed: int = 0,
    held_out: Sequence[Example] = (),
) -> TrainResult:
    """Fit on ``examples`` (each repeated ``weight`` times), and on each label's own words
    ``settings.label_examples`` times, and save into ``out_dir``: ``examples`` are given once
    each, as the dataset holds them. With ``held_out`` answers, ``settings.folds`` above 1 and
    at most ``settings.fold_max_train`` training rows (examples counted ``weight`` times): one
    model per fold (:func:`cross_fitted`). The label rates are measured on ``examples`` alone,
    each example in one fold of their cross-validation."""
    started = time.perf_counter()
    rows = repeated(examples)
    folded = use_folds(len(rows), len(held_out), settings)
    if folded:
        model: ClassicalModel | FoldedClassical = cross_fitted(
            examples, held_out, settings, seed=seed
        )
        rows += list(held_out)
    else:
        texts, answers = _rows(examples, settings)
        model = ClassicalModel.fit(texts, answers, settings, seed=seed)
    model.save(out_dir, settings)
    rates = label_agreement(examples, settings, seed=seed)
    if rates is not None:
        (Path(out_dir) / LABEL_AGREEMENT).write_text(json.dumps(rates.to_dict()), "utf-8")
    seconds = round(time.perf_counter() - started, 2)
    log.info(
        "classical candidate: %d examples, %d labels, %s, %.1f s",
        len(rows),
        len(model.labels),
        f"{settings.folds} folds" if folded else "one model",
        seconds,
    )
    return TrainResult(
        base=BASE,
        model_path=str(out_dir),
        adapter_path=None,
        examples=len(rows),
        steps=0,
        seconds=seconds,
        examples_per_s=round(len(rows) / seconds, 1) if seconds else 0.0,
        final_loss=None,
        trained_examples=len(rows),
    )


def classical_split(
    dataset: Dataset, settings: ClassicalSettings
) -> tuple[list[Example], list[Example]]:
    """The classical candidate's training and held-out examples: the run's, or, when it is
    cross-fitted on a log whose held-out slice is under ``settings.held_out_min``, a wider
    held-out set (:func:`~understudy.distiller.dataset.widened`). Whether it is cross-fitted
    is judged on the rows :func:`train_classical` is given (each ``weight`` times), as it
    judges it."""
    if settings.held_out_min > len(dataset.eval):
        train, held_out = widened(dataset, settings.held_out_min)
        if use_folds(len(repeated(train)), len(held_out), settings):
            return train, held_out
    return dataset.train, dataset.eval


def use_folds(n_train: int, n_held_out: int, settings: ClassicalSettings) -> bool:
    """Whether a run cross-fits: folds asked for, held-out answers to fold, and few enough
    training answers that the held-out ones add to them."""
    folds = settings.folds
    return folds > 1 and n_held_out >= folds and n_train <= settings.fold_max_train


def cross_fitted(
    examples: Sequence[Example],
    held_out: Sequence[Example],
    settings: ClassicalSettings,
    *,
    seed: int = 0,
) -> FoldedClassical:
    """One model per fold: trained on ``examples`` and the ``held_out`` answers outside the
    fold (:func:`~understudy.student.classical.fold_of` of their text). Each held-out answer
    is judged by the one model that never saw it, as a later request of its fold is."""
    folds = settings.folds
    fold = [fold_of(prompt_text(ex.messages, ex.prompt), folds) for ex in held_out]
    models = []
    for k in range(folds):
        others = [ex for ex, f in zip(held_out, fold, strict=True) if f != k]
        texts, answers = _rows([*examples, *others], settings)
        models.append(ClassicalModel.fit(texts, answers, settings, seed=seed))
    return FoldedClassical(models)


@dataclass(frozen=True)
class LabelAgreement:
    """For each label the student gives, how often the teacher gave it too: measured on the
    training examples by cross-validation, so never on the held-out examples the threshold is
    certified on (the order it tests them in stays fixed before their answers are seen)."""

    rates: dict[str, float]
    """Normalised label -> smoothed share of the examples answered with it where the teacher
    agreed, shrunk towards ``default`` by two examples' worth."""
    default: float
    """The overall share (smoothed): the rate of a label the student never gave there."""
    n: int
    """Examples it was measured on."""

    def to_dict(self) -> dict[str, object]:
        return {"rates": self.rates, "default": self.default, "n": self.n, "folds": FOLDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelAgreement:
        rates = data.get("rates") or {}
        return cls(
            rates={str(k): float(v) for k, v in rates.items()},
            default=float(data.get("default", 0.0)),
            n=int(data.get("n", 0)),
        )


def label_agreement(
    examples: Sequence[Example], settings: ClassicalSettings, *, seed: int = 0
) -> LabelAgreement | None:
    """Each label's agreement with the teacher, by ``FOLDS``-fold cross-validation on the
    newest ``MAX_FOLD_EXAMPLES`` of ``examples`` (fold ``i % FOLDS``; label words train every
    fold); None with fewer than ``MIN_FOLD_EXAMPLES`` examples."""
    if len(examples) < MIN_FOLD_EXAMPLES:
        return None
    if len(examples) > MAX_FOLD_EXAMPLES:
        examples = sorted(examples, key=lambda ex: ex.created_at)[-MAX_FOLD_EXAMPLES:]
    given: dict[str, int] = {}
    agreed: dict[str, int] = {}
    for fold in range(FOLDS):
        train = [ex for i, ex in enumerate(examples) if i % FOLDS != fold]
        judged = [ex for i, ex in enumerate(examples) if i % FOLDS == fold]
        texts, answers = _rows(train, settings)
        if len(set(answers)) < 2:
            continue
        model = ClassicalModel.fit(texts, answers, settings, seed=seed)
        top = model.predict([prompt_text(ex.messages, ex.prompt) for ex in judged], top_k=1)
        for ex, ranked in zip(judged, top, strict=True):
            label = normalise_label(ranked[0][0])
            given[label] = given.get(label, 0) + 1
            agreed[label] = agreed.get(label, 0) + (label == normalise_label(ex.answer))
    n = sum(given.values())
    if not n:
        return None
    default = (sum(agreed.values()) + 1) / (n + 2)
    rates = {
        label: round((agreed[label] + 2 * default) / (count + 2), 6)
        for label, count in sorted(given.items())
    }
    return LabelAgreement(rates, round(default, 6), n)


RATE_FOLDS = 5
"""Folds of the requests' texts (:func:`~understudy.student.classical.fold_of`) that the label
rates measured on held-out answers are split in (:func:`held_out_rates`)."""


PRIOR_WEIGHT = 5.0
"""Held-out answers' worth of a label's training rate in its held-out rates: at 2, GPT-3.5's
own 2,080-answer log certified less than with the training rates alone (608 served against
647), at 5 no less; on the gold history it certified more at 5 than at 2."""


def held_out_rates(
    features: Sequence[Mapping[str, Any]],
    agreed: Sequence[bool],
    weights: Sequence[float],
    prior: LabelAgreement,
) -> tuple[list[dict[str, float]], list[float]] | None:
    """Each label's agreement with the teacher, per fold of the held-out answers, measured on
    the held-out answers of the *other* folds (weighted), starting from the label's rate on
    the training examples (``prior``, :data:`PRIOR_WEIGHT` answers' worth). The training
    rates are the agreement of whoever answered the log; the held-out answers are the live
    teacher's, drawn regardless of the router: where the two differ (a history labelled by
    another model or by people), these show where the live teacher answers otherwise. No
    held-out answer's own label moves its fold's rates, so the order the threshold is tested
    in is fixed before it. None when the answers carry no fold."""
    folds = [f.get("fold") for f in features]
    if not features or any(f is None for f in folds):
        return None
    labels = [str(f.get("label") or "") for f in features]
    rates: list[dict[str, float]] = []
    defaults: list[float] = []
    for k in range(RATE_FOLDS):
        given: dict[str, float] = {}
        hits: dict[str, float] = {}
        for label, fold, ok, w in zip(labels, folds, agreed, weights, strict=True):
            if fold != k:
                given[label] = given.get(label, 0.0) + w
                hits[label] = hits.get(label, 0.0) + w * bool(ok)
        n, a = sum(given.values()), sum(hits.values())
        w0 = PRIOR_WEIGHT
        defaults.append(round((a + w0 * prior.default) / (n + w0), 6))
        known = set(prior.rates) | set(given)
        rates.append(
            {
                label: round(
                    (hits.get(label, 0.0) + w0 * prior.rates.get(label, prior.default))
                    / (given.get(label, 0.0) + w0),
                    6,
                )
                for label in sorted(known)
            }
        )
    return rates, defaults


def read_label_agreement(model_dir: str | Path) -> LabelAgreement | None:
    """The label rates saved beside a classical model (None: not measured)."""
    path = Path(model_dir) / LABEL_AGREEMENT
    if not path.is_file():
        return None
    return LabelAgreement.from_dict(json.loads(path.read_text("utf-8")))


def _rows(examples: Sequence[Example], settings: ClassicalSettings) -> tuple[list[str], list[str]]:
    """Texts and answers to fit on: each example ``weight`` times, and each label's words."""
    rows = repeated(examples)
    texts = [prompt_text(ex.messages, ex.prompt) for ex in rows]
    answers = [ex.answer for ex in rows]
    for label in sorted(set(answers)):
        words = label_words(label)
        if words:
            texts += [words] * settings.label_examples
            answers += [label] * settings.label_examples
    return texts, answers
