"""The confidence router on Banking77: how much traffic a tiny student serves, and how well.

    python bench/router.py [--epochs 6] [--lr 3e-3] [--train-limit N] [--test-limit N]
    python bench/router.py --reuse DATA_DIR   # the student of an earlier bench/distill.py run

History: the train split is logged as the teacher's answers and one ``run_distillation``
trains a tiny from-scratch student on it; the run judges the student on the held-out slice of
the history (the most recent 10%, never trained on). Calibration: for each quality target the
router is fitted on those held-out answers exactly as a distillation run does it (policy on
P(agree), threshold under a lower confidence bound). Traffic: the 3,080 test queries; the
student answers each one with token log-probabilities and the router decides. The teacher on
the traffic is ``gpt-label`` (GPT-4). Prints the coverage/agreement curve, the operating
point for quality targets 0.95, 0.97 and 0.99 with the agreement measured on the traffic, the
accuracy (vs gold) of what users receive, and the router's decision time. Writes
``bench/results/router.json``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._banking77 import (
    RESULTS,
    add_run_arguments,
    answer,
    distill,
    features_of,
    fresh_data_dir,
    label_names,
    machine,
    peak_rss_mb,
    read_csv,
    reuse,
    tiny_student_config,
    write_json,
)
from understudy.distiller.config import GateConfig
from understudy.distiller.evaluate import ModelEval
from understudy.router import (
    CalibratedPolicy,
    Features,
    Router,
    ThresholdChoice,
    answers_agree,
    lower_bound,
)

TARGETS = (0.95, 0.97, 0.99)
CURVE_COVERAGES = tuple(round(0.1 * i, 1) for i in range(1, 11))
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Request:
    """One traffic query: the student's answer's features, and who got it right."""

    features: Features
    agrees_with_teacher: bool
    student_correct: bool
    """The student's answer equals the gold intent."""
    teacher_correct: bool
    """The teacher's answer (``gpt-label``) equals the gold intent."""


def judge_traffic(
    gens: Sequence[Any], rows: Sequence[Mapping[str, str]], names: Mapping[str, str]
) -> list[Request]:
    """Each student answer against the teacher's label and the gold label."""
    return [
        Request(
            features=features_of(gen),
            agrees_with_teacher=answers_agree(gen.text, names[row["gpt-label"]], "label"),
            student_correct=answers_agree(gen.text, names[row["label"]], "label"),
            teacher_correct=row["gpt-label"] == row["label"],
        )
        for gen, row in zip(gens, rows, strict=True)
    ]


def calibrate(held_out: ModelEval, targets: Sequence[float]) -> dict[float, dict[str, Any]]:
    """The router a distillation run would store for each quality target, fitted on the
    held-out answers of the history (never on the traffic)."""
    from understudy.distiller.calibrate import calibrate_router

    routers = {}
    for target in targets:
        gates = GateConfig(quality_target=target, confidence=CONFIDENCE)
        spec, _ = calibrate_router(held_out, "label", gates)
        routers[target] = spec.to_dict()
    return routers


def router_of(stored: Mapping[str, Any]) -> Router:
    return Router(
        CalibratedPolicy.from_dict(stored["policy"]),
        ThresholdChoice.from_dict(stored["threshold"]),
    )


def coverage_curve(
    router: Router, traffic: Sequence[Request], coverages: Sequence[float] = CURVE_COVERAGES
) -> list[dict[str, Any]]:
    """Agreement with the teacher on the served share when the student serves the most
    confident ``coverage`` of the traffic. Ties at the threshold are served together, so a
    point stands for every coverage its threshold reaches (listed once); answers failing a
    validity check are never served."""
    scores = [router.policy.score(r.features) if r.features.valid else -math.inf for r in traffic]
    ranked = sorted((s for s in scores if not math.isinf(s)), reverse=True)
    points = []
    for coverage in coverages:
        if not ranked:
            break
        # a coverage past the valid answers serves every valid one
        at = min(max(0, math.ceil(coverage * len(traffic)) - 1), len(ranked) - 1)
        threshold = ranked[at]
        if points and points[-1]["threshold"] == round(threshold, 6):
            continue
        served = [r for r, s in zip(traffic, scores, strict=True) if s >= threshold]
        points.append({"threshold": round(threshold, 6), **_served_stats(served, len(traffic))})
    return points


def operating_point(stored: Mapping[str, Any], traffic: Sequence[Request]) -> dict[str, Any]:
    """What the stored router does on the traffic: what the calibration promised, what was
    measured, and the accuracy (vs gold) of what users receive (the student's answer where
    served, the teacher's elsewhere)."""
    router = router_of(stored)
    served_mask = [router.decide(r.features).serve for r in traffic]
    served = [r for r, s in zip(traffic, served_mask, strict=True) if s]
    delivered = sum(
        r.student_correct if s else r.teacher_correct
        for r, s in zip(traffic, served_mask, strict=True)
    )
    choice = stored["threshold"]
    return {
        "quality_target": stored["quality_target"],
        "threshold": choice["threshold"],
        "calibration": {
            "n": choice["n_calibration"],
            "coverage": _round(choice["expected_coverage"]),
            "agreement": _round(choice["expected_agreement"]),
            "agreement_lower_bound": _round(choice["agreement_lower_bound"]),
        },
        "traffic": _served_stats(served, len(traffic)),
        "delivered_accuracy_vs_gold": _round(delivered / len(traffic)),
    }


def _served_stats(served: Sequence[Request], total: int) -> dict[str, Any]:
    n = len(served)
    agreed = sum(r.agrees_with_teacher for r in served)
    return {
        "served": n,
        "coverage": _round(n / total) if total else None,
        "agreement_with_teacher": _round(agreed / n) if n else None,
        "agreement_interval_95": _interval(agreed, n),
        "student_accuracy_vs_gold": _round(sum(r.student_correct for r in served) / n)
        if n
        else None,
        "teacher_accuracy_vs_gold": _round(sum(r.teacher_correct for r in served) / n)
        if n
        else None,
    }


def _interval(agreed: int, n: int) -> list[float] | None:
    """Two-sided 95% Wilson interval (each side a one-sided 97.5% bound)."""
    if not n:
        return None
    low = lower_bound(agreed, n, 0.975)
    high = 1 - lower_bound(n - agreed, n, 0.975)
    return [round(low, 4), round(high, 4)]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def decision_time_us(
    router: Router, gens: Sequence[Any], traffic: Sequence[Request], decisions: int
) -> dict[str, Any]:
    """Microseconds per routing decision over ``decisions`` calls (cycling through the
    traffic): the decision alone, and feature extraction from the answer plus the decision."""
    features = [r.features for r in traffic]

    def timed(call: Any, items: Sequence[Any]) -> float:
        for item in items[:1000]:  # warm-up
            call(item)
        rounds, rest = divmod(decisions, len(items))
        started = time.perf_counter()
        for _ in range(rounds):
            for item in items:
                call(item)
        for item in items[:rest]:
            call(item)
        return round((time.perf_counter() - started) / decisions * 1e6, 2)

    return {
        "decisions": decisions,
        "decide_us": timed(router.decide, features),
        "extract_and_decide_us": timed(lambda g: router.decide(features_of(g)), gens),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    parser.add_argument(
        "--decisions", type=int, default=200_000, help="decisions timed (default 200,000)"
    )
    parser.add_argument(
        "--reuse",
        metavar="DATA_DIR",
        help="route with the promoted student and held-out answers of an earlier run's data "
        "directory (bench/distill.py --data-dir DATA_DIR) instead of training one",
    )
    parser.add_argument("--output", default=str(RESULTS / "router.json"), help="JSON results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    names = label_names()
    train_rows = read_csv("train.csv")[: args.train_limit]
    test_rows = read_csv("test.csv")[: args.test_limit]
    if args.reuse:
        student = reuse(Path(args.reuse))
    else:
        config = tiny_student_config(args.epochs, args.lr, keep_rejected=True)
        student = distill(fresh_data_dir(args.data_dir), train_rows, names, config)
    held_out = student.held_out()
    if held_out is None or student.weights is None:
        print(f"no student to route: {student.outcome.reason}", file=sys.stderr)
        return 1
    routers = calibrate(held_out, TARGETS)
    gens, gen_seconds = answer(student.weights, student.adapter_path, test_rows)
    traffic = judge_traffic(gens, test_rows, names)
    result = {
        "machine": machine(),
        "settings": {"epochs": args.epochs, "lr": args.lr, "confidence": CONFIDENCE},
        "history_examples": student.logged,
        "distillation": {
            "data_dir": str(student.data_dir),
            "reused": bool(args.reuse),
            "status": student.outcome.status,
            "promoted": student.outcome.promoted,
            "reason": student.outcome.reason,
            "seconds": round(student.seconds, 1),
            "held_out_examples": len(held_out.agreed),
            "held_out_agreement": round(held_out.agreement, 4),
            "stored_threshold": (student.router.get("threshold") or {}).get("threshold"),
        },
        "traffic_examples": len(traffic),
        "generation_s": round(gen_seconds, 2),
        "student_alone": _served_stats(traffic, len(traffic)),
        "curve": coverage_curve(router_of(routers[TARGETS[0]]), traffic),
        "operating_points": [operating_point(routers[t], traffic) for t in TARGETS],
        "decision_time": decision_time_us(router_of(routers[0.97]), gens, traffic, args.decisions),
        "peak_rss_mb": peak_rss_mb(),
    }
    print_tables(result)
    write_json(args.output, result)
    print(f"\nwrote {args.output}; data in {student.data_dir}")
    return 0


def print_tables(result: dict[str, Any]) -> None:
    run = result["distillation"]
    alone = result["student_alone"]
    print(
        f"\nhistory {result['history_examples']} examples; run {run['status']} in "
        f"{run['seconds']} s (promoted: {run['promoted']}); held-out "
        f"{run['held_out_examples']} examples, agreement {run['held_out_agreement']}"
    )
    print(
        f"traffic {result['traffic_examples']} queries; student alone: agreement with teacher "
        f"{alone['agreement_with_teacher']}, accuracy vs gold {alone['student_accuracy_vs_gold']};"
        f" teacher accuracy vs gold {alone['teacher_accuracy_vs_gold']}"
    )
    print("\ncoverage/agreement curve on the traffic (most confident first)")
    print("threshold  coverage  agreement w/ teacher (95% CI)  student vs gold  teacher vs gold")
    for p in result["curve"]:
        low, high = p["agreement_interval_95"]
        print(
            f"{p['threshold']:9.4f}  {p['coverage']:8.3f}  {p['agreement_with_teacher']:9.4f} "
            f"[{low:.3f}, {high:.3f}]      {p['student_accuracy_vs_gold']:15.4f}  "
            f"{p['teacher_accuracy_vs_gold']:15.4f}"
        )
    print("\noperating points (calibrated on the history's held-out slice, measured on traffic)")
    print(
        "target  threshold  calib. cov.  calib. agr. (low)  traffic cov.  traffic agr. (95% CI)"
        "  delivered acc."
    )
    for p in result["operating_points"]:
        cal, live = p["calibration"], p["traffic"]
        interval = live["agreement_interval_95"] or ["-", "-"]
        threshold = "none" if p["threshold"] is None else f"{p['threshold']:.4f}"
        print(
            f"{p['quality_target']:6.2f}  {threshold:>9}  {cal['coverage']!s:>11}  "
            f"{cal['agreement']!s:>6} ({cal['agreement_lower_bound']!s:>6})  "
            f"{live['coverage']!s:>12}  {live['agreement_with_teacher']!s:>6} "
            f"[{interval[0]}, {interval[1]}]  {p['delivered_accuracy_vs_gold']}"
        )
    timing = result["decision_time"]
    print(
        f"\nrouter decision: {timing['decide_us']} µs; feature extraction + decision: "
        f"{timing['extract_and_decide_us']} µs (over {timing['decisions']} decisions)"
    )


if __name__ == "__main__":
    sys.exit(main())
