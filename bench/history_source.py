"""What a logged history answered by another labeller costs the router (no gateway; minutes).

The replay's 9,002-query history holds Banking77's gold labels (the train split has no
teacher answers), while its live teacher is one of three recorded LLM columns of the test
split. This trains the classical student two ways and judges both on the same 1,000 test
queries against the live teacher: on the 9,002 gold-labelled train queries, and on the 2,080
other test queries answered by that teacher (what a deployment's log holds). It prints each
student's agreement with the teacher and the share of the 1,000 it could serve, ranked by its
own confidence, with the served answers agreeing at least 0.85 and 0.9 (the best threshold,
seen in hindsight: an upper limit on what any certificate can give).

``--first-run`` measures instead what the replay's first run on the gold history certifies:
the student trained on the 9,002 gold labels, its threshold certified (as a run does: fixed
sequences, 99%, at least 50 served) on the stream's first 250 live answers, then applied to
the 2,830 test queries after them, for each stream order in ``--seeds``. Its answers are
ranked three ways: by the first-token margin alone; by the margin times each label's
agreement rate measured on the training answers (the product's ranking: there, the gold
labels' agreement with themselves); and by the margin times each label's rate measured on
the live answers of the other four folds of the 250 (a text's fold by
:func:`~understudy.student.classical.fold_of`, so no answer ranks itself).

    OMP_NUM_THREADS=1 python bench/history_source.py [--seed 1]
    OMP_NUM_THREADS=1 python bench/history_source.py --first-run [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._banking77 import label_names, read_csv
from bench.headroom import fit as headroom_fit
from bench.headroom import stream
from understudy.distiller.classical import LabelAgreement, label_agreement
from understudy.distiller.dataset import Example
from understudy.router.threshold import certify_threshold
from understudy.student.classical import ClassicalModel, ClassicalSettings, fold_of

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


LIVE = 250
"""Live answers the first run is certified on."""
FOLDS = 5
TARGET = 0.8
CONFIDENCE = 0.99
MIN_SERVED = 50


def shrunk(pairs: list[tuple[str, bool]]) -> tuple[float, dict[str, float]]:
    """Each label's agreement among ``(label, agreed)`` pairs, shrunk towards the overall rate
    by two answers' worth (as :func:`~understudy.distiller.classical.label_agreement`)."""
    default = (sum(a for _, a in pairs) + 1) / (len(pairs) + 2)
    given: dict[str, list[bool]] = {}
    for label, agreed in pairs:
        given.setdefault(label, []).append(agreed)
    return default, {k: (sum(v) + 2 * default) / (len(v) + 2) for k, v in given.items()}


def fold_rates(
    answers: list[tuple[str, float, bool]], texts: list[str]
) -> list[tuple[float, dict[str, float]]]:
    """For each fold, the label rates (:func:`shrunk`) of the answers in the other folds."""
    folds = [fold_of(t, FOLDS) for t in texts]
    return [
        shrunk([(a[0], a[2]) for a, f in zip(answers, folds, strict=True) if f != k])
        for k in range(FOLDS)
    ]


def first_run(seeds: list[int]) -> None:
    """What the first run on the gold history certifies, ranked three ways (module doc)."""
    settings = ClassicalSettings()
    gold, _, _ = stream(0, TEACHERS[0], 0, 9002)
    model = headroom_fit(gold, settings)
    examples = [
        Example(str(i), float(i), a, messages=[{"role": "user", "content": t}])
        for i, (t, a) in enumerate(gold)
    ]
    trained = label_agreement(examples, settings)
    assert trained is not None
    print("| teacher | seed | ranking | surest 50 / 100 agree | certified | served | agreement |")
    print("|---|---|---|---|---|---|---|")
    for teacher in TEACHERS:
        for seed in seeds:
            _, live, unseen = stream(seed, teacher, LIVE, 0)  # the replay's order
            on_live, on_unseen = _top(model, live), _top(model, unseen)
            by_fold = fold_rates(on_live, [t for t, _ in live])
            for name in RANKINGS:
                scores = [
                    _score(name, p, t, trained, by_fold)
                    for p, (t, _) in zip(on_live, live, strict=True)
                ]
                agreed = [p[2] for p in on_live]
                pairs = sorted(zip(scores, agreed, strict=True), key=lambda x: -x[0])
                ranked = [a for _, a in pairs]
                choice = certify_threshold(
                    scores, agreed, TARGET, CONFIDENCE, min_served=MIN_SERVED
                )
                served = [
                    p[2]
                    for p, (t, _) in zip(on_unseen, unseen, strict=True)
                    if _score(name, p, t, trained, by_fold) >= choice.threshold
                ]
                agreement = f"{sum(served) / len(served):.3f}" if served else "-"
                print(
                    f"| {teacher} | {seed} | {name} | {sum(ranked[:50]) / 50:.2f} / "
                    f"{sum(ranked[:100]) / 100:.2f} | {choice.expected_coverage:.2f} "
                    f"| {len(served)} | {agreement} |",
                    flush=True,
                )


RANKINGS = ("margin", "margin x training rates", "margin x other folds' live rates")


def _score(
    ranking: str,
    answer: tuple[str, float, bool],
    text: str,
    trained: LabelAgreement,
    by_fold: list[tuple[float, dict[str, float]]],
) -> float:
    label, margin, _ = answer
    if ranking == "margin":
        return margin
    if ranking == "margin x training rates":
        return margin * trained.rates.get(label, trained.default)
    default, rates = by_fold[fold_of(text, FOLDS)]
    return margin * rates.get(label, default)


def _top(model: ClassicalModel, pairs: list[tuple[str, str]]) -> list[tuple[str, float, bool]]:
    """Each answer's label, first-token margin and whether the teacher gave it."""
    out = []
    for (_, answer), ranked in zip(
        pairs, model.predict([t for t, _ in pairs], top_k=2), strict=True
    ):
        first = math.exp(ranked[0][1])
        second = math.exp(ranked[1][1]) if len(ranked) > 1 else 0.0
        out.append((ranked[0][0], first - second, ranked[0][0] == answer))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=1, help="order of the test split")
    p.add_argument(
        "--first-run", action="store_true", help="what the first run on the gold history certifies"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="with --first-run")
    args = p.parse_args(argv)
    if args.first_run:
        first_run(args.seeds)
        return 0
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
