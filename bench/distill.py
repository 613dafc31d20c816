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
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._banking77 import (
    BATCH_SIZE,
    RESULT_FILE,
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


class PhaseTimes:
    """The run's phases as they begin (a :class:`~understudy.distiller.progress.Progress`):
    each call to ``phase`` is a mark, repeated names included (the classical candidate trains
    and is evaluated after the model), so the seconds between marks say where the run went."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def started(self, run_id: str, run_dir: Path) -> None:
        self.marks.append(("start", time.perf_counter()))

    def phase(self, name: str) -> None:
        if not self.marks or self.marks[-1][0] != name:
            self.marks.append((name, time.perf_counter()))

    def step(self, done: int, total: int | None, unit: str = "") -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def finished(self) -> None:
        self.marks.append(("end", time.perf_counter()))

    def seconds(self) -> list[tuple[str, float]]:
        """Each phase and the seconds until the next mark, in order."""
        return [
            (name, round(after - at, 1))
            for (name, at), (_, after) in zip(self.marks, self.marks[1:], strict=False)
        ]


def phases(times: PhaseTimes, student: Distilled) -> dict[str, Any]:
    """Where the run's seconds went: each phase mark's seconds, and the language model's job
    (its own process: setup, i.e. process start, tokenizer, model build and tokenisation;
    training steps; evaluation) from its own figures."""
    out: dict[str, Any] = {"marks": times.seconds()}
    path = student.run_dir / RESULT_FILE
    if path.exists():
        job = json.loads(path.read_text())
        out["model_setup_s"] = job["train"].get("setup_seconds")
        out["model_train_s"] = job["train"].get("seconds")
        out["model_train_cpu_s"] = job["train"].get("cpu_seconds")
        out["model_steps"] = job["train"].get("steps")
        out["model_eval_s"] = job["candidate"].get("seconds")
    return out


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
    parser.add_argument(
        "--example-budget",
        type=int,
        default=0,
        help="train.example_budget: most examples trained on over all passes (0: none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="train.seed (default 0)")
    parser.add_argument(
        "--length-grouping",
        action="store_true",
        help="train.length_grouped = true: batches of examples of similar length",
    )
    parser.add_argument(
        "--keep-system-prompt",
        action="store_true",
        help="train.tiny_implied_system = false: the language model trains on the system prompt",
    )
    parser.add_argument(
        "--padded",
        action="store_true",
        help="train.padding_free = false: each batch padded to its longest example",
    )
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=["classical", "model"],
        choices=["classical", "model"],
        help="train.candidates (default both; classical alone times the classical candidate)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    names = label_names()
    train_rows = read_csv("train.csv")[: args.train_limit]
    data_dir = fresh_data_dir(args.data_dir)
    times = PhaseTimes()
    config = tiny_student_config(args.epochs, args.lr)
    config.train.example_budget = args.example_budget
    config.train.length_grouped = args.length_grouping
    config.train.seed = args.seed
    config.train.candidates = args.candidates
    config.train.tiny_implied_system = not args.keep_system_prompt
    config.train.padding_free = not args.padded
    student = distill(data_dir, train_rows, names, config, times)
    outcome = student.outcome
    if not outcome.promoted:
        print(f"run {outcome.status}, not promoted: {outcome.reason}", file=sys.stderr)
    test = judge_test_split(student, names, args.test_limit) if outcome.promoted else {}
    train = outcome.metrics.get("train", {})
    result = {
        "machine": machine(),
        "settings": {
            "epochs": args.epochs,
            "example_budget": args.example_budget,
            "length_grouped": args.length_grouping,
            "seed": args.seed,
            "candidates": args.candidates,
            "tiny_implied_system": not args.keep_system_prompt,
            "padding_free": not args.padded,
            "lr": args.lr,
            "batch_size": BATCH_SIZE,
            "student": "tiny",
        },
        "data_dir": str(data_dir),
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
        "phases": phases(times, student),
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
    times = result["phases"]
    print("\nphases: " + ", ".join(f"{name} {s} s" for name, s in times["marks"]))
    if "model_train_s" in times:
        print(
            "language model's job: setup {model_setup_s} s, {model_steps} steps in "
            "{model_train_s} s ({model_train_cpu_s} s of CPU), evaluation {model_eval_s} s".format(
                **times
            )
        )
    for gate in run["gates"]:
        verdict = "pass" if gate["passed"] else "FAIL"
        value, threshold = gate["value"], gate["threshold"]
        print(f"  gate {gate['name']:<16} {value!s:>8} (threshold {threshold})  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
