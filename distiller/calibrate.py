"""Fitting the router for a candidate: calibration of P(agree) and the serving threshold.

The threshold and the coverage it gives are chosen on out-of-fold scores (each held-out
example scored by a policy fitted without it), so the coverage a gate sees is not flattered by
scoring the examples the policy was fitted on. The policy stored for serving is then fitted
on all held-out examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from understudy.distiller.config import GateConfig
from understudy.distiller.evaluate import ModelEval
from understudy.router import CalibratedPolicy, RouterSpec, choose_threshold

FOLDS = 5


def calibrate_router(
    candidate: ModelEval, kind: str, config: GateConfig
) -> tuple[RouterSpec, float]:
    """The router to store with the model version, and the coverage it is expected to give
    at ``config.target`` (0 when no threshold reaches the target)."""
    features, labels = candidate.features, [bool(x) for x in candidate.agreed]
    if not labels:
        return RouterSpec(kind, config.target), 0.0
    scores = out_of_fold_scores(features, labels)
    choice = choose_threshold(scores, labels, config.target, config.confidence)
    router = RouterSpec(kind, config.target, _fit(features, labels), choice)
    return router, float(choice.expected_coverage)


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
