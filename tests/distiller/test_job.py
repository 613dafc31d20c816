import json
from dataclasses import asdict

from understudy.distiller.config import GateConfig, TrainConfig
from understudy.distiller.evaluate import ModelEval
from understudy.distiller.job import ChampionWeights, Job, JobResult
from understudy.distiller.train import TrainResult, WarmStart
from understudy.distiller.worker import JOB_FILE, RESULT_FILE


def a_job(tmp_path) -> Job:
    return Job(
        run_dir=str(tmp_path),
        kind="label",
        system_prompt="Classify.",
        train=TrainConfig(base_model="tiny", method="full", epochs=2),
        gates=GateConfig(quality_target=0.9),
        champion=ChampionWeights("t@v1", "/m/v1"),
        warm_start=WarmStart("t@v1", model_path="/m/v1"),
    )


def an_eval(agreed: list[bool]) -> ModelEval:
    return ModelEval(
        agreed=agreed,
        valid=[True] * len(agreed),
        features=[{"mean_token_logprob": -0.1}] * len(agreed),
        answers=["a"] * len(agreed),
        golden=[{"id": "g1", "expected": "a", "answer": "a", "passed": True}],
        latency_ms={"p50": 1.0, "p95": 2.0, "mean": 1.5, "n": 2},
        seconds=0.5,
    )


def test_job_file_keeps_its_format(tmp_path):
    job = a_job(tmp_path)
    job.write(tmp_path / JOB_FILE)
    stored = json.loads((tmp_path / JOB_FILE).read_text())
    assert stored == {
        "run_dir": str(tmp_path),
        "kind": "label",
        "system_prompt": "Classify.",
        "train": asdict(job.train),
        "gates": asdict(job.gates),
        "champion": {"id": "t@v1", "weights": "/m/v1", "adapter_path": None},
        "warm_start": {"id": "t@v1", "model_path": "/m/v1", "adapter_path": None},
    }
    assert Job.read(tmp_path / JOB_FILE) == job


def test_job_without_champion(tmp_path):
    job = Job(str(tmp_path), "text", None, TrainConfig(), GateConfig())
    stored = job.to_dict()
    assert stored["champion"] is None and stored["warm_start"] is None
    assert Job.from_dict(json.loads(json.dumps(stored))) == job


def test_result_file_round_trips_and_is_written_whole(tmp_path):
    train = TrainResult("tiny", "/run/candidate/model", None, 10, 4, 1.5, 13.3, 0.25)
    train.log_history.append({"loss": 0.25})
    result = JobResult(train, an_eval([True, False]), an_eval([True, True]))
    result.write(tmp_path / RESULT_FILE)
    assert [p.name for p in tmp_path.iterdir()] == [RESULT_FILE]
    stored = json.loads((tmp_path / RESULT_FILE).read_text())
    assert list(stored) == ["train", "candidate", "champion"]
    assert "log_history" not in stored["train"]
    read = JobResult.read(tmp_path / RESULT_FILE)
    assert read.candidate == result.candidate and read.champion == result.champion
    assert read.train.to_dict() == train.to_dict() and read.train.log_history == []


def test_result_of_an_older_version_reads(tmp_path):
    stored = {
        "train": {
            "base": "tiny",
            "model_path": None,
            "adapter_path": "/a",
            "examples": 3,
            "steps": 1,
            "seconds": 0.1,
            "examples_per_s": 30.0,
            "final_loss": None,
        },
        "candidate": an_eval([True]).to_dict(),
        "champion": None,
    }
    read = JobResult.from_dict(stored)
    assert read.train.warm_start_from is None and read.train.weights == "tiny"
    assert read.champion is None
