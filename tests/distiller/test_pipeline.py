"""Full runs on a tiny from-scratch student, in the order a task lives through them.

The tests share one data directory and run in file order: the first run promotes v1, a
sabotaged one is rejected, a golden example blocks one, a good one promotes v2, rollback
goes back to v1, and a killed run leaves the champion alone.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.distiller.conftest import log_feedback, log_intents
from understudy.distiller.config import (
    DatasetConfig,
    DistillConfig,
    GateConfig,
    ScheduleConfig,
    TrainConfig,
)
from understudy.distiller.pipeline import run_distillation
from understudy.storage.database import open_database
from understudy.storage.distill_queries import (
    add_golden,
    get_lock,
    get_run,
    list_runs,
    remove_golden,
)
from understudy.storage.registry import champion, get_model, rollback, task_state
from understudy.student.threads import auto_threads

pytestmark = pytest.mark.slow

TASK = "intent"


def tiny_config(base: str, isolation: str = "inline") -> DistillConfig:
    return DistillConfig(
        dataset=DatasetConfig(eval_fraction=0.25, eval_min=10, min_examples=40),
        train=TrainConfig(
            base_model=base,
            method="full",
            learning_rate=3e-3,
            epochs=15,
            batch_size=16,
            device="cpu",
            logging_steps=5,
            isolation=isolation,
            candidates=["model"],  # the language model's path (the classical one: test_classical)
        ),
        # 40 held-out answers (32 certify the threshold) can show at most ~0.92 agreement at
        # 95% confidence (Wilson), with the bound taken on at least 25 of them.
        gates=GateConfig(
            min_agreement=0.8,
            quality_target=0.9,
            eval_batch_size=64,
            max_new_tokens=8,
            min_calibration_examples=20,
            min_certified_served=25,
            bound="wilson",
            confidence=0.95,
        ),
        schedule=ScheduleConfig(heartbeat_s=0.5),
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("distill")
    db = open_database(path / "understudy.db")
    log_intents(db, TASK, 160)
    db.conn.close()
    return path


@pytest.fixture
def db(data_dir):
    database = open_database(data_dir / "understudy.db")
    yield database
    database.conn.close()


def test_a_full_run_in_its_own_process_trains_evaluates_and_promotes(data_dir, db, tiny_base):
    outcome = run_distillation(data_dir, TASK, tiny_config(tiny_base, "process"), trigger="manual")

    assert (outcome.status, outcome.promoted, outcome.candidate_id) == (
        "succeeded",
        True,
        "intent@v1",
    )
    assert outcome.reason == "all gates passed"
    assert {g["name"] for g in outcome.gates} == {
        "agreement",
        "coverage",
        "non_inferiority",
        "validity",
        "golden",
    }
    assert outcome.metrics["agreement"] >= 0.8 and outcome.metrics["validity"] == 1.0
    run = get_run(db, outcome.run_id)
    assert run["status"] == "succeeded" and run["promoted"] and run["finished_at"]
    assert run["dataset"]["train"] == 120 and run["dataset"]["eval"] == 40
    assert run["gates"] == outcome.gates
    run_dir = Path(run["run_dir"])
    assert (run_dir / "train.log").stat().st_size > 0
    assert (run_dir / "progress.jsonl").read_text().count("loss") > 0
    # train.threads = 0: the training process holds torch to the cores less one (1 on 2).
    assert f"torch threads: {auto_threads(0)}" in (run_dir / "train.log").read_text()
    assert outcome.metrics["train"]["trained_examples"] == 120

    model = champion(db, TASK)
    assert model.id == "intent@v1" and model.run_id == outcome.run_id
    assert Path(model.model_path) == data_dir / "models" / TASK / "v1"
    assert (Path(model.model_path) / "config.json").is_file()
    assert model.router["kind"] == "label" and model.router["quality_target"] == 0.9
    assert outcome.metrics["quality_target"] == 0.9
    assert 1 <= outcome.metrics["confidence_levels"] <= outcome.metrics["eval_examples"]
    assert model.router["policy"]["name"] == "calibrated"
    assert model.router["threshold"]["threshold"] is not None
    coverage = model.router["threshold"]["expected_coverage"]
    assert coverage == pytest.approx(outcome.metrics["coverage"], abs=1e-4) and coverage > 0
    assert model.metrics["agreement"] == outcome.metrics["agreement"]
    assert model.data_window["examples"] == 160
    assert model.data_window["eval_from"] > model.data_window["train_to"]
    assert get_lock(db, TASK) is None


def test_training_changed_the_weights(data_dir, db, tiny_base):
    from safetensors.torch import load_file

    before = load_file(Path(tiny_base) / "model.safetensors")
    after = load_file(Path(champion(db, TASK).model_path) / "model.safetensors")
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert len(changed) == len(before)  # every tensor moved


def test_a_candidate_trained_on_shuffled_labels_is_rejected(data_dir, db, tiny_base):
    rows = list(
        db.query("select id, request_json, response_json from requests order by created_at")
    )
    train_ids = [r["id"] for r in rows[:120]]  # the held-out newest 40 stay true
    labels = ["card_arrival", "top_up", "lost_card", "exchange_rate"]
    rng = random.Random(1)
    for request_id in train_ids:
        log_feedback(db, request_id, correction=rng.choice(labels))

    outcome = run_distillation(data_dir, TASK, tiny_config(tiny_base))

    gates = {g["name"]: g for g in outcome.gates}
    assert outcome.status == "succeeded" and not outcome.promoted
    assert not gates["agreement"]["passed"] and not gates["non_inferiority"]["passed"]
    assert "agreement" in outcome.reason and "non_inferiority" in outcome.reason
    assert outcome.dataset["corrected_by_feedback"] == 120
    assert champion(db, TASK).id == "intent@v1"
    assert not (Path(get_run(db, outcome.run_id)["run_dir"]) / "candidate").exists()
    with db.conn:
        db.execute("delete from feedback")


def test_a_failing_golden_example_blocks_promotion(data_dir, db, tiny_base):
    wrong = add_golden(db, TASK, input_value="hi anna, i lost my card thanks 42", expected="top_up")

    outcome = run_distillation(data_dir, TASK, tiny_config(tiny_base))

    gates = {g["name"]: g for g in outcome.gates}
    assert not outcome.promoted and not gates["golden"]["passed"]
    assert gates["agreement"]["passed"]
    assert outcome.reason == "golden 0.000 < 1.000"
    assert champion(db, TASK).id == "intent@v1"
    remove_golden(db, wrong)


def test_a_good_candidate_replaces_the_champion_and_rollback_restores_it(data_dir, db, tiny_base):
    add_golden(db, TASK, input_value="hi anna, i lost my card thanks 42", expected="lost_card")

    outcome = run_distillation(data_dir, TASK, tiny_config(tiny_base))

    assert outcome.promoted and outcome.candidate_id == "intent@v2"
    gates = {g["name"]: g for g in outcome.gates}
    assert gates["golden"]["value"] == 1.0
    assert "served traffic" in gates["non_inferiority"]["detail"]
    assert outcome.metrics["champion"] == "intent@v1"
    state = task_state(db, TASK)
    assert (state.champion_id, state.previous_id) == ("intent@v2", "intent@v1")

    rollback(db, TASK)
    assert champion(db, TASK).id == "intent@v1"
    assert get_model(db, "intent@v2").status == "rolled_back"


def test_a_killed_training_process_fails_the_run_and_leaves_the_champion(data_dir, db, tiny_base):
    before = task_state(db, TASK)
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            outcome=run_distillation(data_dir, TASK, tiny_config(tiny_base, "process"))
        )
    )
    thread.start()
    pid_file = _wait_until_training(data_dir)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    thread.join(timeout=60)

    outcome = result["outcome"]
    assert outcome.status == "failed" and not outcome.promoted
    assert outcome.reason.startswith("training process was killed by SIGKILL")
    assert get_run(db, outcome.run_id)["status"] == "failed"
    assert task_state(db, TASK) == before
    assert get_lock(db, TASK) is None
    assert [r["status"] for r in list_runs(db, TASK)] == [
        "failed",
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded",
    ]


def _wait_until_training(data_dir: Path) -> Path:
    """The pid file of the new run's training process, once its training loop has begun."""
    known = set((data_dir / "distill" / TASK).glob("*/worker.pid"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for pid_file in set((data_dir / "distill" / TASK).glob("*/worker.pid")) - known:
            log = pid_file.with_name("train.log")
            if "training on" in log.read_text(errors="replace"):
                return pid_file
        time.sleep(0.05)
    raise AssertionError("the training process never started training")
