"""Fitting the router for a candidate: calibration of P(agree) and the serving threshold.

The threshold and the coverage it gives are chosen on out-of-fold scores (each held-out
example scored by a policy fitted without it), so the coverage a gate sees is not flattered by
scoring the examples the policy was fitted on. The policy stored for serving is then fitted
on all held-out examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from understudy.distiller.config import GateConfig
from understudy.distiller.evaluate import ModelEval
from understudy.distiller.gates import Served
from understudy.router import (
    CalibratedPolicy,
    Features,
    Router,
    RouterSpec,
    ThresholdChoice,
    choose_threshold,
)
from understudy.router.config import RouterConfig

FOLDS = 5


@dataclass
class Calibration:
    """The router fitted for a candidate, and what it would serve of the held-out set."""

    router: RouterSpec
    coverage: float
    """Expected share served at the quality target (0 when no threshold reaches it)."""
    served: Served
    """What it serves of the held-out examples (out-of-fold scores at the threshold)."""
    note: str | None = None
    """Why nothing is served, when the reason is not the scores (too few examples)."""


def calibrate_router(
    candidate: ModelEval, kind: str, config: GateConfig
) -> tuple[RouterSpec, float]:
    """The router to store with the model version, and the coverage it is expected to give
    at ``config.target`` (0 when no threshold reaches the target)."""
    result = calibrate(candidate, kind, config)
    return result.router, result.coverage


def calibrate(candidate: ModelEval, kind: str, config: GateConfig) -> Calibration:
    """The router and the served slice of ``candidate``. A threshold is certified only on at
    least ``config.min_calibration_examples`` held-out examples (drawn uniformly from
    traffic by the dataset); with fewer, nothing is served."""
    features, labels = candidate.features, [bool(x) for x in candidate.agreed]
    if not labels:
        return Calibration(RouterSpec(kind, config.target), 0.0, Served(0.0, 0, 0))
    scores = out_of_fold_scores(features, labels)
    choice = choose_threshold(scores, labels, config.target, config.confidence)
    note = None
    if len(labels) < config.min_calibration_examples:
        note = (
            f"{len(labels)} held-out examples < min_calibration_examples "
            f"{config.min_calibration_examples}: no threshold certified"
        )
        choice = _nothing(choice)
    router = RouterSpec(kind, config.target, _fit(features, labels), choice)
    served = Served.of([s >= choice.threshold for s in scores], labels)
    return Calibration(router, float(choice.expected_coverage), served, note)


def champion_served(
    router: Mapping[str, Any], features: Sequence[Mapping[str, Any]], agreed: Sequence[bool]
) -> Served:
    """What the champion, under its stored router, would serve of the same examples."""
    spec = RouterSpec.from_dict(router)
    if spec.threshold is not None:
        decider = Router(spec.policy, spec.threshold)
    else:
        decider = Router(spec.policy, fixed_threshold=RouterConfig.fixed_threshold)
    served = [decider.decide(Features.from_dict(f)).serve for f in features]
    return Served.of(served, [bool(a) for a in agreed])


def _nothing(choice: ThresholdChoice) -> ThresholdChoice:
    return ThresholdChoice(
        threshold=float("inf"),
        expected_coverage=0.0,
        expected_agreement=None,
        agreement_lower_bound=None,
        n_calibration=choice.n_calibration,
        quality_target=choice.quality_target,
        confidence=choice.confidence,
        bound=choice.bound,
    )


def out_of_fold_scores(
    features: Sequence[Mapping[str, Any]], labels: Sequence[bool], folds: int = FOLDS
) -> list[float]:
    """P(agree) of each example from a policy fitted on the other folds."""
    n = len(labels)
    folds = max(2, min(folds, n))
    scores = [0.0] * n
    for k in range(folds):
        held = [i for i in range(n) if i % folds == k]
        rest = [i for i in range(n) if i % folds != k]
        policy = _fit([features[i] for i in rest], [labels[i] for i in rest])
        for i, score in zip(held, policy.scores([features[i] for i in held]), strict=True):
            scores[i] = float(score)
    return scores


def _fit(features: Sequence[Mapping[str, Any]], labels: Sequence[bool]) -> CalibratedPolicy:
    return CalibratedPolicy.fit(list(features), list(labels))


def confidence_levels(router: RouterSpec, features: Sequence[Mapping[str, Any]]) -> int:
    """Distinct confidences (to 6 decimals) the stored policy gives the held-out answers: few
    levels mean the threshold cannot tell answers apart, so coverage cannot be traded for
    quality between them."""
    if router.policy is None:
        return 0
    return len({round(score, 6) for score in router.policy.scores(list(features))})
