"""What a logged history answered by another labeller costs the router (no gateway; minutes).

The replay's 9,002-query history holds Banking77's gold labels (the train split has no
teacher answers), while its live teacher is one of three recorded LLM columns of the test
split. This trains the classical student two ways and judges both on the same 1,000 test
queries against the live teacher: on the 9,002 gold-labelled train queries, and on the 2,080
other test queries answered by that teacher (what a deployment's log holds). It prints each
student's agreement with the teacher and the share of the 1,000 it could serve, ranked by its
own confidence, with the served answers agreeing at least 0.85 and 0.9 (the best threshold,
seen in hindsight: an upper limit on what any certificate can give).

    OMP_NUM_THREADS=1 python bench/history_source.py [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._banking77 import label_names, read_csv
from understudy.student.classical import ClassicalModel

TEACHERS = ("gpt-label", "gpt4-label_nonrep", "gpt35-label_rep")


def coverage_at(confidence: list[float], agreed: list[bool], target: float) -> float:
    """The largest share served, most confident first, whose answers agree at ``target``."""
    ranked = [a for _, a in sorted(zip(confidence, agreed, strict=True), key=lambda p: -p[0])]
    best = hits = 0
    for n, agrees in enumerate(ranked, 1):
        hits += agrees
        if hits >= target * n:
            best = n
    return best / len(ranked)


def judge(model: ClassicalModel, judged: list[tuple[str, str]]) -> str:
    top = [p[0] for p in model.predict([t for t, _ in judged], top_k=1)]
    agreed = [label == answer for (label, _), (_, answer) in zip(top, judged, strict=True)]
    confidence = [logprob for _, logprob in top]
    at = [f"{coverage_at(confidence, agreed, target):.2f}" for target in (0.85, 0.9)]
    return (
        f"agreement {sum(agreed) / len(agreed):.3f}, share served at 0.85 {at[0]}, at 0.9 {at[1]}"
    )


def fit(pairs: list[tuple[str, str]]) -> ClassicalModel:
    return ClassicalModel.fit([t for t, _ in pairs], [a for _, a in pairs])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=1, help="order of the test split")
    args = p.parse_args(argv)
    names = label_names()
    gold = fit([(r["text"], names[r["label"]]) for r in read_csv("train.csv")])
    test = read_csv("test.csv")
    random.Random(args.seed).shuffle(test)
    for teacher in TEACHERS:
        answered = [(r["text"], names.get(r[teacher], "unknown")) for r in test]
        own, judged = answered[:2080], answered[2080:]
        print(f"{teacher}: 9,002 gold labels: {judge(gold, judged)}", flush=True)
        print(f"{teacher}: 2,080 teacher answers: {judge(fit(own), judged)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
