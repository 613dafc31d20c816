"""Banking77 as an Understudy task, shared by ``bench/distill.py`` and ``bench/router.py``.

The train split becomes logged teacher history in a fresh database (system prompt fixed,
user = query, assistant = intent name); one ``run_distillation`` trains a tiny from-scratch
student on it; the promoted student then answers test queries with token log-probabilities.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from understudy.distiller.config import DatasetConfig, DistillConfig, GateConfig, TrainConfig
from understudy.distiller.evaluate import ModelEval
from understudy.distiller.pipeline import RunOutcome, run_distillation
from understudy.distiller.progress import Progress
from understudy.distiller.worker import RESULT_FILE
from understudy.storage.database import open_database
from understudy.storage.records import RequestRecord
from understudy.storage.registry import champion

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "banking77"
RESULTS = ROOT / "bench" / "results"
SYSTEM = "Classify the customer's banking query. Answer with the intent name only."
TASK = "banking77"
BATCH_SIZE = 16
"""Training batch: on 2 CPU cores 16 trains faster per example than 32 or 64."""


def read_csv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def label_names() -> dict[str, str]:
    """Intent id (as in the CSV files) to intent name."""
    return {r["label"]: r["label_name"] for r in read_csv("label_names.csv")}


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both benchmarks share: training length, data size, where data goes."""
    parser.add_argument("--epochs", type=float, default=6.0, help="training epochs (default 6)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (3e-3)")
    parser.add_argument("--train-limit", type=int, help="log only the first N train queries")
    parser.add_argument("--test-limit", type=int, help="use only the first N test queries")
    parser.add_argument("--data-dir", help="data directory (default: a fresh temporary one)")


def log_history(db_path: Path, rows: list[dict[str, str]], names: dict[str, str]) -> None:
    """The train split as teacher traffic, one request a second in a shuffled order."""
    rows = list(rows)
    random.Random(0).shuffle(rows)
    start = time.time() - len(rows)
    records = []
    for i, row in enumerate(rows):
        response = {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "model": "teacher",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": names[row["label"]]},
                    "finish_reason": "stop",
                }
            ],
        }
        records.append(
            RequestRecord(
                id=f"req_{i}",
                created_at=start + i,
                endpoint="chat.completions",
                task=TASK,
                task_source="header",
                requested_model="gpt-4",
                served_by="teacher",
                status="ok",
                request_json=json.dumps({"model": "gpt-4", "messages": messages(row["text"])}),
                response_json=json.dumps(response),
            ).as_row()
        )
    db = open_database(db_path)
    with db.conn:
        db["requests"].insert_all(records, batch_size=1000)
    db.conn.close()


def tiny_student_config(epochs: float, lr: float, *, keep_rejected: bool = False) -> DistillConfig:
    """The tiny from-scratch student's best measured settings on 2 CPU cores: full
    fine-tuning, loss on the whole sequence, weight decay 0.1, batch 16."""
    return DistillConfig(
        dataset=DatasetConfig(eval_fraction=0.1, eval_max=1000),
        train=TrainConfig(
            base_model="tiny",
            method="full",
            epochs=epochs,
            batch_size=BATCH_SIZE,
            learning_rate=lr,
            weight_decay=0.1,
            max_length=128,
            completion_only_loss=False,
            device="cpu",
            logging_steps=100,
        ),
        gates=GateConfig(max_new_tokens=16, eval_batch_size=64),
        keep_rejected_weights=keep_rejected,
    )


@dataclass
class Distilled:
    """One distillation run on the logged train split, and where its student lives."""

    data_dir: Path
    outcome: RunOutcome
    seconds: float
    weights: str | None
    """The promoted student (or, when kept, the rejected candidate); ``None`` if neither."""
    adapter_path: str | None
    router: dict[str, Any]
    """The router stored with the promoted student (empty when none was promoted)."""
    logged: int = 0
    """Teacher answers logged as history."""

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "distill" / TASK / self.outcome.run_id

    def held_out(self) -> ModelEval | None:
        """The candidate's answers on the held-out slice of the history (the run's own eval)."""
        path = self.run_dir / RESULT_FILE
        if not path.exists():
            return None
        return ModelEval.from_dict(json.loads(path.read_text())["candidate"])


def fresh_data_dir(given: str | None) -> Path:
    data_dir = Path(given or tempfile.mkdtemp(prefix="understudy-bench-"))
    if (data_dir / "understudy.db").exists():
        raise SystemExit(f"{data_dir / 'understudy.db'} exists: the benchmark needs a fresh one")
    return data_dir


def distill(
    data_dir: Path,
    rows: list[dict[str, str]],
    names: dict[str, str],
    config: DistillConfig,
    progress: Progress | None = None,
) -> Distilled:
    """Log ``rows`` as teacher history into a fresh database and run one distillation
    (``progress`` hears of its phases)."""
    log_history(data_dir / "understudy.db", rows, names)
    started = time.perf_counter()
    outcome = run_distillation(data_dir, TASK, config, trigger="bench", progress=progress)
    seconds = time.perf_counter() - started
    db = open_database(data_dir / "understudy.db")
    model = champion(db, TASK)
    db.conn.close()
    result = Distilled(data_dir, outcome, seconds, None, None, {}, len(rows))
    if model is not None:
        result.weights, result.adapter_path, result.router = (
            model.weights,
            model.adapter_path,
            model.router,
        )
    elif (result.run_dir / RESULT_FILE).exists() and config.keep_rejected_weights:
        train = json.loads((result.run_dir / RESULT_FILE).read_text())["train"]
        result.weights = train["model_path"] or train["base"]
        result.adapter_path = train["adapter_path"]
    return result


def reuse(data_dir: Path) -> Distilled:
    """The latest run and the champion of an earlier benchmark's data directory."""
    from understudy.storage.distill_queries import last_run

    db = open_database(data_dir / "understudy.db")
    run, model = last_run(db, TASK), champion(db, TASK)
    logged = db["requests"].count_where("task = ?", [TASK])
    db.conn.close()
    if run is None or model is None:
        raise SystemExit(f"{data_dir}: no promoted student of task {TASK} to reuse")
    outcome = RunOutcome(
        run["id"], TASK, run["status"], bool(run["promoted"]), run["reason"], model.id
    )
    seconds = (run["finished_at"] or run["started_at"]) - run["started_at"]
    return Distilled(
        data_dir, outcome, seconds, model.weights, model.adapter_path, model.router, logged
    )


def answer(
    weights: str, adapter_path: str | None, rows: list[dict[str, str]], batch_size: int = 64
) -> tuple[list[Any], float]:
    """The student's greedy answers (with token log-probabilities) to ``rows``' queries, and
    the seconds they took."""
    from understudy.distiller.generate import Prompt, StudentRunner

    runner = StudentRunner(weights, adapter_path, device="cpu")
    started = time.perf_counter()
    gens = runner.generate(
        [Prompt(messages(r["text"])) for r in rows], max_new_tokens=16, batch_size=batch_size
    )
    return gens, time.perf_counter() - started


def features_of(gen: Any) -> Any:
    """The router's features of one student answer (a label: no format, no tools)."""
    from understudy.router import extract_features

    return extract_features(
        token_logprobs=gen.logprobs,
        first_token_alternatives=gen.first_alternatives,
        text=gen.text,
        finish_reason=gen.finish_reason,
        response_format=None,
        tools=None,
    )


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest child (the training job)."""
    to_mb = 1 / 1024  # ru_maxrss is in KiB on Linux
    return {
        "bench_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb, 1),
        "training_process": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb, 1
        ),
    }


def write_json(path: str | Path, result: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
