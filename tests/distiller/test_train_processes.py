"""Training on several processes (``train.num_processes``): the job runs under ``accelerate
launch`` with distributed data parallel, here on CPU with the gloo backend and a tiny model,
and gives the result one process gives, with one set of files written by the first process."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.distiller.conftest import SYSTEM, intent_messages
from understudy.distiller.config import GateConfig, TrainConfig
from understudy.distiller.dataset import Example
from understudy.distiller.generate import Prompt, StudentRunner
from understudy.distiller.job import Job, JobResult
from understudy.distiller.process import run_job_process
from understudy.distiller.worker import JOB_FILE, LOG_FILE, PROGRESS_FILE, write_examples

pytestmark = pytest.mark.slow


def examples(n: int) -> list[Example]:
    return [
        Example(
            str(i),
            i,
            label,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        )
        for i, (text, label) in enumerate(intent_messages(n))
    ]


def run_job(run_dir: Path, train: TrainConfig) -> JobResult:
    """Write a run directory as the pipeline does and run its job in a process of its own."""
    run_dir.mkdir(parents=True)
    data = examples(40)
    write_examples(run_dir / "train.jsonl", data[:32])
    write_examples(run_dir / "eval.jsonl", data[32:])
    (run_dir / "golden.json").write_text("[]")
    job = Job(str(run_dir), "label", SYSTEM, train, GateConfig(max_new_tokens=4))
    job.write(run_dir / JOB_FILE)
    return run_job_process(run_dir / JOB_FILE, timeout_s=300, threads=train.threads)


TINY = TrainConfig(
    base_model="tiny",
    method="full",
    epochs=1,
    batch_size=8,
    device="cpu",
    tiny_hidden=32,
    tiny_layers=1,
    tiny_vocab_size=256,
    logging_steps=1,
    threads=2,  # the cores here: shared, one thread for each of two processes
)


def shape(value: object) -> object:
    """The keys of a result, nested, without the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__ if value is not None else None


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory) -> tuple[tuple[JobResult, Path], tuple[JobResult, Path]]:
    root = tmp_path_factory.mktemp("processes")
    one = run_job(root / "one", TINY)
    two = run_job(root / "two", replace(TINY, num_processes=2))
    return (one, root / "one"), (two, root / "two")


def test_two_processes_give_a_result_of_the_same_shape(one_and_two):
    (one, _), (two, _) = one_and_two

    assert shape(two.to_dict()) == shape(one.to_dict())
    assert (one.train.processes, two.train.processes) == (1, 2)
    assert two.train.examples == one.train.examples == 32
    assert two.train.trained_examples == 32
    # each process takes batch_size examples a step: half the steps for the same epoch
    assert (one.train.steps, two.train.steps) == (4, 2)
    assert two.candidate.seconds > 0 and len(two.candidate.agreed) == 8
    assert two.champion is None


def test_the_first_process_alone_writes_the_model_and_it_loads(one_and_two):
    _, (two, run_dir) = one_and_two

    assert two.train.model_path == str(run_dir / "candidate" / "model")
    assert two.train.base == str(run_dir / "candidate" / "base")  # built once, by the first
    runner = StudentRunner(two.train.weights, device="cpu")
    (gen,) = runner.generate([Prompt(messages=examples(1)[0].messages)], max_new_tokens=4)
    assert gen.finish_reason in ("stop", "length") and all(lp <= 0 for lp in gen.logprobs)

    # progress and log lines once each, not once per process
    steps = [json.loads(line).get("loss") for line in (run_dir / PROGRESS_FILE).open()]
    assert len([s for s in steps if s is not None]) == 2
    log = (run_dir / LOG_FILE).read_text()
    assert log.count("training on 32 of 32 examples") == 1
    assert "2 training processes, 8 examples each per step" in log
    assert log.count("evaluating the candidate") == 1
    assert log.count("torch threads: 1") == 1


def test_a_distillation_run_trains_on_two_processes(tmp_path, tiny_base):
    """The run's own path: the setting, the job file, the launch, the result judged."""
    from tests.distiller.conftest import log_intents
    from tests.distiller.test_pipeline import tiny_config
    from understudy.distiller.pipeline import run_distillation
    from understudy.storage.database import open_database
    from understudy.storage.distill_queries import get_run

    db = open_database(tmp_path / "understudy.db")
    log_intents(db, "intent", 80)
    config = tiny_config(tiny_base, isolation="process")
    config.dataset = replace(config.dataset, min_examples=20, eval_min=10)
    config.train = replace(config.train, epochs=2, num_processes=2)

    outcome = run_distillation(tmp_path, "intent", config, trigger="manual")

    assert outcome.status == "succeeded", outcome.reason
    assert outcome.metrics["train"]["processes"] == 2
    assert outcome.metrics["train"]["trained_examples"] == 60
    run = get_run(db, outcome.run_id)
    log = (Path(run["run_dir"]) / LOG_FILE).read_text()
    assert log.count("evaluating the candidate") == 1
    db.conn.close()


def test_a_failed_job_on_two_processes_says_why(tmp_path):
    """The run's reason was the launcher's last words ('traceback : To enable traceback see:
    https://pytorch.org/...'), not the cause one process gives."""
    from understudy.distiller.process import TrainingFailed

    missing = str(tmp_path / "no-such-model")
    train = replace(TINY, base_model=missing, num_processes=2)
    with pytest.raises(TrainingFailed) as failed:
        run_job(tmp_path / "run", train)
    reason = str(failed.value)
    assert reason.startswith("training process exited with code 1: ")
    assert missing in reason and "traceback" not in reason
