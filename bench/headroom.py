"""How much the replay's streams could save with the classical student if certifying were free.

The replay (``bench/replay.py``) serves what the distiller *certifies*: a threshold whose
agreement with the teacher has a 99% lower bound at the quality target, taken on the few
hundred answers a run holds out. This replays the same streams with the certificate replaced
by the truth, so that a savings goal can be told apart from what the data allows:

- the stream is the replay's (the test queries in the order of ``--seeds``, answered by one
  recorded teacher column, after the optional gold-labelled history);
- a run comes after every K teacher calls, as in the replay (the first after K answers);
  it trains one model (the product's settings, label words included) on what the log
  holds then: the history and the answers the teacher gave, none of those the student served;
- it serves at the widest threshold whose answers agree with the teacher at least at the
  target on every query the model has not seen (the rest of the stream and the test queries
  outside it): the threshold a certificate that knew the student's agreement exactly would
  choose. Nothing is audited or shadowed, and a run's student always replaces the last.

Each row is what the replay could save at most with this student, schedule and target; the
replay's own figure, beside it, is what the certificate leaves of it. It prints a table per
teacher and seed and writes ``bench/results/headroom.json``.

    OMP_NUM_THREADS=1 python bench/headroom.py [--limit 1000] [--k 250] [--history 9002] \
        [--seeds 0 1 2] [--teachers gpt-label ...] [--target 0.8] [--set NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._banking77 import RESULTS, machine
from bench.replay import TEACHERS, bench_data
from understudy.demo.banking77 import sample
from understudy.student.classical import ClassicalModel, ClassicalSettings, label_words


def widest(confidence: Sequence[float], agreed: Sequence[bool], target: float) -> float:
    """The lowest confidence whose answers at or above it agree at ``target`` (``inf``: none).
    Ties are served together, as the router serves them."""
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    best = float("inf")
    hits = 0
    for rank, i in enumerate(order):
        hits += agreed[i]
        tied = rank + 1 < len(order) and confidence[order[rank + 1]] == confidence[i]
        if not tied and hits >= target * (rank + 1):
            best = confidence[i]
    return best


def fit(pairs: Sequence[tuple[str, str]], settings: ClassicalSettings) -> ClassicalModel:
    texts = [t for t, _ in pairs]
    answers = [a for _, a in pairs]
    for label in sorted(set(answers)):  # as a run trains: each label's words, too
        words = label_words(label)
        if words:
            texts += [words] * settings.label_examples
            answers += [label] * settings.label_examples
    return ClassicalModel.fit(texts, answers, settings)


def judge(
    model: ClassicalModel, pairs: Sequence[tuple[str, str]]
) -> tuple[list[float], list[bool]]:
    """Each answer's confidence (log-probability) and whether it is the teacher's."""
    top = [p[0] for p in model.predict([t for t, _ in pairs], top_k=1)]
    agreed = [label == a for (label, _), (_, a) in zip(top, pairs, strict=True)]
    return [lp for _, lp in top], agreed


Pairs = list[tuple[str, str]]
"""Queries with their answers."""


def stream(seed: int, teacher: str, limit: int, history: int) -> tuple[Pairs, Pairs, Pairs]:
    """The replay's logged history (its first ``history`` gold-labelled train queries), its
    stream of ``limit`` test queries for ``seed``, and the test queries after them."""
    data = bench_data(teacher, "train", seed, limit)
    ordered = [(q.text, q.teacher) for q in sample(data.test, None, seed + 1)]
    logged = [(q.text, q.teacher) for q in data.train[:history]]
    return logged, ordered[:limit], ordered[limit:]


def one(seed: int, teacher: str, args: argparse.Namespace) -> dict[str, object]:
    """The replay's stream for ``seed`` and ``teacher``, served with the truth for certificate."""
    settings = ClassicalSettings(**args.settings)
    logged, queries, rest = stream(seed, teacher, args.limit, args.history)
    answered: list[tuple[str, str]] = []  # the stream's teacher answers so far
    confidence: list[float] = []  # the current student's, for queries[first:] and the rest
    agreeing: list[bool] = []
    threshold = float("inf")
    first = 0  # index in ``queries`` of confidence[0]
    served = agreed = calls = 0
    runs = []
    for i, (text, answer) in enumerate(queries):
        if calls == args.k:
            model = fit([*logged, *answered], settings)
            unseen = [*queries[i:], *rest]
            confidence, agreeing = judge(model, unseen)
            threshold = widest(confidence, agreeing, args.target)
            first, calls = i, 0
            covered = sum(c >= threshold for c in confidence)
            runs.append(
                {
                    "at_query": i,
                    "trained_on": len(logged) + len(answered),
                    "agreement_unseen": round(sum(agreeing) / len(agreeing), 4),
                    "coverage_unseen": round(covered / len(unseen), 4),
                }
            )
            hits = [a for a, c in zip(agreeing, confidence, strict=True) if c >= threshold]
            runs[-1]["served_agreement_unseen"] = round(sum(hits) / len(hits), 4) if hits else None
        if confidence and confidence[i - first] >= threshold:
            served += 1
            agreed += agreeing[i - first]
        else:
            calls += 1
            answered.append((text, answer))
    return {
        "seed": seed,
        "teacher": teacher,
        "queries": len(queries),
        "saved": served / len(queries),
        "served": served,
        "served_agreement": agreed / served if served else None,
        "runs": runs,
    }


def _setting(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    fields = {f.name: f.type for f in dataclasses.fields(ClassicalSettings)}
    if name not in fields or not value:
        raise SystemExit(f"--set {text!r}: expected NAME=VALUE, NAME one of {sorted(fields)}")
    return name, float(value) if fields[name] == "float" else int(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--limit", type=int, default=1000, help="queries in the stream (3080: all)")
    p.add_argument("--k", type=int, default=250, help="a run every K teacher calls (250)")
    p.add_argument("--history", type=int, default=0, help="gold-labelled train queries first")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=TEACHERS)
    p.add_argument("--target", type=float, default=0.8, help="quality target (0.8)")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a [distiller.classical] setting for the student (e.g. c=30), repeatable",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "headroom.json")
    args = p.parse_args(argv)
    args.settings = dict(_setting(s) for s in args.settings)
    began = time.time()
    rows = []
    print("| teacher | seed | saved at most | served | their agreement | each run: share served |")
    print("|---|---|---|---|---|---|")
    for teacher in args.teachers:
        for seed in args.seeds:
            row = one(seed, teacher, args)
            rows.append(row)
            agreement = row["served_agreement"]
            shares = " ".join(f"{r['coverage_unseen']:.2f}" for r in row["runs"])
            print(
                f"| {teacher} | {seed} | {row['saved']:.1%} | {row['served']} "
                f"| {'-' if agreement is None else f'{agreement:.3f}'} | {shares} |",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "machine": machine(),
                "seconds": round(time.time() - began, 1),
                "rows": rows,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
