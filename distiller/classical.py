"""The classical candidate of a run: TF-IDF + logistic regression on label-shaped tasks.

Trained and evaluated in the run's own process (seconds, no torch), on the same training,
held-out and golden examples as the language-model candidate, and judged by the same gates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from understudy.distiller.dataset import Dataset, Example
from understudy.distiller.train import TrainResult
from understudy.student.classical import (
    ClassicalModel,
    ClassicalSettings,
    label_words,
    prompt_text,
)

log = logging.getLogger("understudy.distiller")

ENGINE = "classical"
BASE = "classical"
"""The base recorded in the registry for a classical student."""


def fits(dataset: Dataset, settings: ClassicalSettings) -> bool:
    """Whether the task is label-shaped: a label kind, with 2 to ``max_labels`` answers."""
    if dataset.kind != "label":
        return False
    labels = {ex.answer for ex in dataset.train}
    return 2 <= len(labels) <= settings.max_labels


def train_classical(
    examples: Sequence[Example], settings: ClassicalSettings, out_dir: Path, *, seed: int = 0
) -> TrainResult:
    """Fit on ``examples`` (each repeated ``weight`` times), and on each label's own words
    ``settings.label_examples`` times, and save into ``out_dir``."""
    started = time.perf_counter()
    rows = [ex for ex in examples for _ in range(max(1, ex.weight))]
    texts = [prompt_text(ex.messages, ex.prompt) for ex in rows]
    answers = [ex.answer for ex in rows]
    for label in sorted(set(answers)):
        words = label_words(label)
        if words:
            texts += [words] * settings.label_examples
            answers += [label] * settings.label_examples
    model = ClassicalModel.fit(texts, answers, settings, seed=seed)
    model.save(out_dir, settings)
    seconds = round(time.perf_counter() - started, 2)
    log.info(
        "classical candidate: %d examples, %d labels, %.1f s", len(rows), len(model.labels), seconds
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
