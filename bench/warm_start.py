"""Warm start on Banking77: how much of the champion a continued run keeps, per learning rate.

A tiny from-scratch student (the champion) trains on the 9,002 train queries (gold labels); then
each continued run starts from its weights and trains ``--warm-epochs`` passes over the same
history plus ``--live`` test queries answered by GPT-4 (the teacher answers a run adds), at
``--scales`` times the learning rate. Every model answers the rest of the test split, judged
against gold and against GPT-4. Table on stdout, figures in ``bench/results/warm_start.json``.

    python bench/warm_start.py
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._banking77 import (
    BATCH_SIZE,
    RESULTS,
    label_names,
    machine,
    messages,
    read_csv,
    write_json,
)
from understudy.distiller.config import TrainConfig
from understudy.distiller.dataset import Example
from understudy.distiller.generate import Prompt, StudentRunner
from understudy.distiller.train import train_candidate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=float, default=6.0, help="the champion's training epochs")
    p.add_argument("--warm-epochs", type=float, default=1.0, help="epochs of a continued run")
    p.add_argument("--live", type=int, default=500, help="GPT-4-answered queries a run adds")
    p.add_argument(
        "--scales", type=float, nargs="+", default=[1.0, 0.33, 0.1], help="learning-rate scales"
    )
    p.add_argument("--lr", type=float, default=3e-3, help="the champion's peak learning rate")
    p.add_argument("--out", type=Path, default=RESULTS / "warm_start.json", help="JSON results")
    return p.parse_args(argv)


def score(path: str, queries: list[dict[str, str]], names: dict[str, str]) -> dict[str, float]:
    """Share of ``queries`` the model at ``path`` answers with the gold / GPT-4 intent."""
    runner = StudentRunner(path, None, "cpu")
    answers: list[str] = []
    for start in range(0, len(queries), 64):
        batch = [Prompt(messages=messages(q["text"])) for q in queries[start : start + 64]]
        answers += [g.text.strip() for g in runner.generate(batch, max_new_tokens=16)]
    pairs = list(zip(answers, queries, strict=True))
    return {
        "gold": round(sum(a == names[q["label"]] for a, q in pairs) / len(pairs), 4),
        "teacher": round(sum(a == names[q["gpt-label"]] for a, q in pairs) / len(pairs), 4),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = label_names()
    test = read_csv("test.csv")
    random.Random(0).shuffle(test)
    live, judged = test[: args.live], test[args.live :]

    def example(i: int, row: dict[str, str], label: str) -> Example:
        return Example(str(i), float(i), names[label], messages=messages(row["text"]))

    history = [example(i, r, r["label"]) for i, r in enumerate(read_csv("train.csv"))]
    added = [example(len(history) + i, r, r["gpt-label"]) for i, r in enumerate(live)]
    config = TrainConfig(
        base_model="tiny",
        method="full",
        epochs=args.epochs,
        batch_size=BATCH_SIZE,
        learning_rate=args.lr,
        weight_decay=0.1,
        completion_only_loss=False,
        device="cpu",
        logging_steps=200,
        warm_start_epochs=args.warm_epochs,
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="understudy-warm-") as tmp:
        champion = train_candidate(history, config, Path(tmp) / "champion")
        rows.append(
            {
                "run": f"champion ({args.epochs:g} epochs from scratch)",
                "examples": len(history),
                "train_s": champion.seconds,
                **score(str(champion.model_path), judged, names),
            }
        )
        for scale in args.scales:
            continued = train_candidate(
                history + added,
                replace(config, warm_start_lr_scale=scale),
                Path(tmp) / f"continued-{scale:g}",
                warm_start={"id": "champion", "model_path": champion.model_path},
            )
            rows.append(
                {
                    "run": f"continued, learning rate x {scale:g}",
                    "examples": len(history) + len(added),
                    "train_s": continued.seconds,
                    **score(str(continued.model_path), judged, names),
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"judged on {len(judged)} test queries")
    print("| run | examples | training s | accuracy vs gold | agreement with GPT-4 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['examples']:,} | {r['train_s']:.0f} | {r['gold']:.4f} "
            f"| {r['teacher']:.4f} |"
        )
    write_json(
        args.out,
        {
            "benchmark": "warm_start",
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "judged": len(judged),
            "rows": rows,
            "machine": machine(),
        },
    )
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
