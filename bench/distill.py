"""One full distillation run on Banking77, timed, and the promoted student judged on the test split.

    python bench/distill.py [--epochs 6] [--train-limit N] [--data-dir DIR]

The train split is logged into a fresh database as teacher history (system prompt fixed,
user = query, assistant = intent name), one row a second in a shuffled order; then one
``run_distillation`` with a tiny from-scratch student (full fine-tuning, training in its own
process) builds the dataset, trains, evaluates, fits the router and promotes. The promoted
student then answers the 3,080 test queries; its answers are compared with the teacher's
(``gpt-label``, GPT-4) and with the gold labels, overall and on the queries the router would
let it serve. Prints a table and writes ``bench/results/distill.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distiller.config import DatasetConfig, DistillConfig, GateConfig, TrainConfig  # noqa: E402
from distiller.pipeline import run_distillation  # noqa: E402
from storage.database import open_database  # noqa: E402
from storage.records import RequestRecord  # noqa: E402
from storage.registry import champion  # noqa: E402

DATA = ROOT / "bench" / "data" / "banking77"
RESULTS = ROOT / "bench" / "results" / "distill.json"
SYSTEM = "Classify the customer's banking query. Answer with the intent name only."
TASK = "banking77"


def read_csv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def log_history(db_path: Path, rows: list[dict[str, str]], names: dict[str, str]) -> None:
    """The train split as teacher traffic, in a shuffled arrival order."""
    rows = list(rows)
    random.Random(0).shuffle(rows)
    start = time.time() - len(rows)
    db = open_database(db_path)
    records = []
    for i, row in enumerate(rows):
        answer = names[row["label"]]
        response = {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "model": "teacher",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
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
    with db.conn:
        db["requests"].insert_all(records, batch_size=1000)
    db.conn.close()


def config(args: argparse.Namespace) -> DistillConfig:
    return DistillConfig(
        dataset=DatasetConfig(eval_fraction=0.1, eval_max=1000),
        train=TrainConfig(
            base_model="tiny",
            method="full",
            epochs=args.epochs,
            batch_size=16,
            learning_rate=args.lr,
            weight_decay=0.1,
            max_length=128,
            completion_only_loss=False,
            device="cpu",
            logging_steps=100,
        ),
        gates=GateConfig(max_new_tokens=16, eval_batch_size=64),
    )


def judge_test_split(model: Any, names: dict[str, str], limit: int | None) -> dict[str, Any]:
    """The promoted student on the test split: agreement with the teacher and gold accuracy,
    overall and on the share the stored router would serve."""
    from distiller.generate import Prompt, StudentRunner
    from router import CalibratedPolicy, Router, ThresholdChoice, answers_agree, extract_features

    rows = read_csv("test.csv")[:limit]
    runner = StudentRunner(model.weights, model.adapter_path, device="cpu")
    started = time.perf_counter()
    gens = runner.generate(
        [Prompt(messages(r["text"])) for r in rows], max_new_tokens=16, batch_size=64
    )
    seconds = time.perf_counter() - started
    router = Router(
        CalibratedPolicy.from_dict(model.router["policy"]),
        ThresholdChoice.from_dict(model.router["threshold"]),
    )
    served = agree = gold = served_agree = served_gold = 0
    for row, gen in zip(rows, gens, strict=True):
        teacher_ok = answers_agree(gen.text, names[row["gpt-label"]], "label")
        gold_ok = answers_agree(gen.text, names[row["label"]], "label")
        features = extract_features(
            token_logprobs=gen.logprobs,
            first_token_alternatives=gen.first_alternatives,
            text=gen.text,
            finish_reason=gen.finish_reason,
            response_format=None,
            tools=None,
        )
        serve = router.decide(features).serve
        agree += teacher_ok
        gold += gold_ok
        if serve:
            served += 1
            served_agree += teacher_ok
            served_gold += gold_ok
    n = len(rows)
    teacher_gold = sum(r["gpt-label"] == r["label"] for r in rows) / n
    return {
        "test_examples": n,
        "agreement_with_teacher": round(agree / n, 4),
        "accuracy_vs_gold": round(gold / n, 4),
        "teacher_accuracy_vs_gold": round(teacher_gold, 4),
        "coverage_at_threshold": round(served / n, 4),
        "agreement_when_served": round(served_agree / served, 4) if served else None,
        "accuracy_when_served": round(served_gold / served, 4) if served else None,
        "generation_s": round(seconds, 2),
        "generation_per_s": round(n / seconds, 1),
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import os

    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, default=6.0, help="training epochs (default 6)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--train-limit", type=int, help="log only the first N train queries")
    parser.add_argument("--test-limit", type=int, help="judge only the first N test queries")
    parser.add_argument("--data-dir", help="data directory (default: a fresh temporary one)")
    parser.add_argument("--output", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    names = {r["label"]: r["label_name"] for r in read_csv("label_names.csv")}
    train_rows = read_csv("train.csv")[: args.train_limit]
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="understudy-bench-"))
    db_path = data_dir / "understudy.db"
    if db_path.exists():
        parser.error(f"{db_path} exists: the benchmark needs a fresh data directory")

    log_history(db_path, train_rows, names)
    started = time.perf_counter()
    outcome = run_distillation(data_dir, TASK, config(args), trigger="bench")
    run_seconds = time.perf_counter() - started
    if not outcome.promoted:
        print(f"run {outcome.status}, not promoted: {outcome.reason}", file=sys.stderr)
    db = open_database(db_path)
    model = champion(db, TASK)
    test = judge_test_split(model, names, args.test_limit) if model else {}
    train = outcome.metrics.get("train", {})
    result = {
        "machine": machine(),
        "settings": {"epochs": args.epochs, "lr": args.lr, "batch_size": 16, "student": "tiny"},
        "logged_examples": len(train_rows),
        "run": {
            "status": outcome.status,
            "promoted": outcome.promoted,
            "model": outcome.candidate_id,
            "reason": outcome.reason,
            "seconds": round(run_seconds, 1),
            "train_examples": outcome.dataset.get("train"),
            "eval_examples": outcome.dataset.get("eval"),
            "dropped_duplicates": outcome.dataset.get("dropped_exact_duplicate", 0)
            + outcome.dataset.get("dropped_near_duplicate", 0),
            "train_seconds": train.get("seconds"),
            "train_examples_per_s": train.get("examples_per_s"),
            "held_out_agreement": outcome.metrics.get("agreement"),
            "held_out_coverage": outcome.metrics.get("coverage"),
            "threshold": outcome.metrics.get("threshold"),
            "gates": outcome.gates,
        },
        "test": test,
        "peak_rss_mb": {
            "bench_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "training_process": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            ),
        },
    }
    print_table(result)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}; data in {data_dir}")
    return 0 if outcome.promoted else 1


def print_table(result: dict[str, Any]) -> None:
    run, test = result["run"], result["test"]
    rows = [
        ("logged teacher examples", result["logged_examples"]),
        ("train / held-out examples", f"{run['train_examples']} / {run['eval_examples']}"),
        ("full run (dataset, train, eval, gates, promote)", f"{run['seconds']} s"),
        ("training", f"{run['train_seconds']} s, {run['train_examples_per_s']} examples/s"),
        ("held-out agreement (recent slice of the log)", run["held_out_agreement"]),
        ("held-out coverage at the quality target", run["held_out_coverage"]),
        ("promoted", f"{run['promoted']} ({run['model'] or run['reason']})"),
        ("test: agreement with the teacher (gpt-label)", test.get("agreement_with_teacher")),
        ("test: accuracy vs gold", test.get("accuracy_vs_gold")),
        ("test: teacher accuracy vs gold", test.get("teacher_accuracy_vs_gold")),
        ("test: share the router serves", test.get("coverage_at_threshold")),
        ("test: agreement with the teacher when served", test.get("agreement_when_served")),
        (
            "peak RSS bench / training process (MB)",
            "{bench_process} / {training_process}".format(**result["peak_rss_mb"]),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\n{'metric':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for gate in run["gates"]:
        verdict = "pass" if gate["passed"] else "FAIL"
        value, threshold = gate["value"], gate["threshold"]
        print(f"  gate {gate['name']:<16} {value!s:>8} (threshold {threshold})  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
