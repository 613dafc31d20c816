"""One full distillation run on Banking77, timed, and the promoted student judged on the test split.

    python bench/distill.py [--epochs 6] [--lr 3e-3] [--train-limit N] [--test-limit N]

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
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._banking77 import (
    BATCH_SIZE,
    RESULTS,
    Distilled,
    add_run_arguments,
    answer,
    distill,
    features_of,
    fresh_data_dir,
    label_names,
    machine,
    peak_rss_mb,
    read_csv,
    tiny_student_config,
    write_json,
)


def judge_test_split(
    student: Distilled, names: dict[str, str], limit: int | None
) -> dict[str, Any]:
    """The promoted student on the test split: agreement with the teacher and gold accuracy,
    overall and on the share the stored router would serve."""
    from understudy.router import CalibratedPolicy, Router, ThresholdChoice, answers_agree

    rows = read_csv("test.csv")[:limit]
    gens, seconds = answer(student.weights or "", student.adapter_path, rows)
    router = Router(
        CalibratedPolicy.from_dict(student.router["policy"]),
        ThresholdChoice.from_dict(student.router["threshold"]),
    )
    served = agree = gold = served_agree = served_gold = 0
    for row, gen in zip(rows, gens, strict=True):
        teacher_ok = answers_agree(gen.text, names[row["gpt-label"]], "label")
        gold_ok = answers_agree(gen.text, names[row["label"]], "label")
        serve = router.decide(features_of(gen)).serve
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--output", default=str(RESULTS / "distill.json"), help="JSON results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    names = label_names()
    train_rows = read_csv("train.csv")[: args.train_limit]
    data_dir = fresh_data_dir(args.data_dir)
    student = distill(data_dir, train_rows, names, tiny_student_config(args.epochs, args.lr))
    outcome = student.outcome
    if not outcome.promoted:
        print(f"run {outcome.status}, not promoted: {outcome.reason}", file=sys.stderr)
    test = judge_test_split(student, names, args.test_limit) if outcome.promoted else {}
    train = outcome.metrics.get("train", {})
    result = {
        "machine": machine(),
        "settings": {
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": BATCH_SIZE,
            "student": "tiny",
        },
        "logged_examples": len(train_rows),
        "run": {
            "status": outcome.status,
            "promoted": outcome.promoted,
            "model": outcome.candidate_id,
            "reason": outcome.reason,
            "seconds": round(student.seconds, 1),
            "train_examples": outcome.dataset.get("train"),
            "eval_examples": outcome.dataset.get("eval"),
            "dropped_duplicates": outcome.dataset.get("dropped_exact_duplicate", 0)
            + outcome.dataset.get("dropped_near_duplicate", 0),
            "train_seconds": train.get("seconds"),
            "train_examples_per_s": train.get("examples_per_s"),
            "eval_seconds": outcome.metrics.get("eval_seconds"),
            "held_out_agreement": outcome.metrics.get("agreement"),
            "held_out_coverage": outcome.metrics.get("coverage"),
            "threshold": outcome.metrics.get("threshold"),
            "gates": outcome.gates,
        },
        "test": test,
        "peak_rss_mb": peak_rss_mb(),
    }
    print_table(result)
    write_json(args.output, result)
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
