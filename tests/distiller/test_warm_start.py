"""``train.warm_start``: a run over a grown log continues from the champion's weights."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.distiller.conftest import log_intents
from tests.distiller.test_pipeline import tiny_config
from understudy.distiller.pipeline import run_distillation
from understudy.storage.database import open_database

pytestmark = pytest.mark.slow

TASK = "intent"


def warm_config(base: str, method: str = "full"):
    config = tiny_config(base)
    return replace(
        config,
        train=replace(config.train, method=method, warm_start=True, warm_start_epochs=2),
    )


def progress(data_dir, run_id: str) -> list[dict]:
    path = data_dir / "distill" / TASK / run_id / "progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def first_loss(data_dir, run_id: str) -> float:
    return next(r["loss"] for r in progress(data_dir, run_id) if "loss" in r)


def peak_learning_rate(data_dir, run_id: str) -> float:
    return max(r["learning_rate"] for r in progress(data_dir, run_id) if "learning_rate" in r)


def test_runs_after_the_first_continue_from_the_champion(tmp_path, tiny_base):
    db = open_database(tmp_path / "understudy.db")
    log_intents(db, TASK, 160)

    first = run_distillation(tmp_path, TASK, warm_config(tiny_base))
    assert first.promoted and first.metrics["train"]["warm_start_from"] is None
    assert first.metrics["train"]["steps"] == 15 * 8  # from the base: train.epochs (120 / 16)

    log_intents(db, TASK, 40, start=5000.0, seed=1)  # the log grew
    second = run_distillation(tmp_path, TASK, warm_config(tiny_base))

    train = second.metrics["train"]
    assert train["warm_start_from"] == "intent@v1"
    assert train["steps"] == 2 * 10  # train.warm_start_epochs over 150 examples
    assert first_loss(tmp_path, second.run_id) < first_loss(tmp_path, first.run_id) / 3
    # ... at a third of the learning rate (train.warm_start_lr_scale), the first run at all of it
    assert 0.25 * 3e-3 < peak_learning_rate(tmp_path, second.run_id) <= 0.33 * 3e-3
    assert peak_learning_rate(tmp_path, first.run_id) > 0.9 * 3e-3
    assert second.promoted and second.candidate_id == "intent@v2"

    # A LoRA run cannot continue a fully fine-tuned champion: it starts from the base.
    third = run_distillation(tmp_path, TASK, warm_config(tiny_base, method="lora"))
    assert third.status == "succeeded"
    assert third.metrics["train"]["warm_start_from"] is None
    db.conn.close()
