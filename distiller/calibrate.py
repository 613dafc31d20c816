"""Fitting the router for a candidate: calibration of P(agree) and the serving threshold.

The held-out examples are split in two, by position: the policy (P(agree) from the answer's
features) is fitted on one part (``FIT_SHARE``), and the threshold is certified on the other
with that very policy, the one stored and served. Certifying on out-of-fold scores of other
policies, or on the examples the policy was fitted on, certifies something other than what
serves. The threshold is chosen by fixed-sequence testing (:func:`router.certify_threshold`):
a lower bound on the agreement of what it serves, on at least ``min_certified_served``
examples, each weighted by the inverse of its chance to be drawn (shadow checks against
audits).

A candidate whose answers are one label with its probability (the classical student) needs no
policy fitted on a share of the held-out set: the features are functions of its class
probabilities, and that probability ranks its answers as well as a policy fitted on a few dozen
examples would (worse: such a fit is noisy). Its policy is the smoothed agreement rate times
that probability, an order fixed before any label is seen, and every held-out example
certifies the threshold: a quarter more evidence for the same bound. When the training
examples measured how often the teacher agreed with each label the student gives
(:func:`distiller.classical.label_agreement`, by cross-validation on them, never on the
held-out set), that label's rate times the answer's margin ranks them instead: still fixed
before any held-out label is seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from understudy.distiller.classical import LabelAgreement, held_out_rates
from understudy.distiller.config import GateConfig
from understudy.distiller.evaluate import ModelEval
from understudy.distiller.gates import Served
from understudy.router import (
    CalibratedPolicy,
    Features,
    Router,
    RouterSpec,
    ThresholdChoice,
    certify_threshold,
    nearest_miss,
)
from understudy.router.config import RouterConfig

FIT_SHARE = 0.2
"""Share of the held-out examples the policy is fitted on; the rest certify the threshold."""
MIN_FIT = 10
"""Fewest examples the policy is fitted on (at most half the held-out set): on a handful it
cannot tell a sure answer from an unsure one."""


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


def calibrate(
    candidate: ModelEval,
    kind: str,
    config: GateConfig,
    *,
    ranked_by_probability: bool = False,
    label_rates: LabelAgreement | None = None,
) -> Calibration:
    """The router and the served slice of ``candidate``. A threshold is certified only on at
    least ``config.min_calibration_examples`` held-out examples (drawn uniformly from
    traffic by the dataset); with fewer, nothing is served. ``ranked_by_probability``: the
    answer's probability ranks the answers (one-label answers); no policy is fitted on a share
    of them and all certify; with ``label_rates`` (measured off the held-out set), the
    answer's label rate times its margin ranks them."""
    features, labels = candidate.features, [bool(x) for x in candidate.agreed]
    weights = candidate.sample_weights()
    if not labels:
        return Calibration(RouterSpec(kind, config.target), 0.0, Served(0.0, 0, 0))
    if ranked_by_probability:
        fit, check = [], list(range(len(labels)))
        folded = (
            held_out_rates(features, labels, weights, label_rates)
            if label_rates is not None
            else None
        )
        policy = probability_policy(labels, label_rates, folded)
    else:
        fit, check = split_for_certification(len(labels))
        policy = _fit([features[i] for i in fit], [labels[i] for i in fit])
    check_scores = policy.scores([features[i] for i in check])
    choice = certify_threshold(
        check_scores,
        [labels[i] for i in check],
        config.target,
        config.confidence,
        config.bound,
        min_served=config.min_certified_served,
        weights=[weights[i] for i in check],
    )
    note = None
    if len(labels) < config.min_calibration_examples:
        note = (
            f"{len(labels)} held-out examples < min_calibration_examples "
            f"{config.min_calibration_examples}: no threshold certified"
        )
        choice = _nothing(choice)
    elif choice.serves_nothing:
        note = _why_nothing(len(check), config) or _nearest_miss_note(
            check_scores,
            [labels[i] for i in check],
            [weights[i] for i in check],
            config,
        )
    router = RouterSpec(kind, config.target, policy, choice)
    scores = policy.scores(features)
    served = Served.of([s >= choice.threshold for s in scores], labels, weights)
    return Calibration(router, float(choice.expected_coverage), served, note)


def split_for_certification(n: int) -> tuple[list[int], list[int]]:
    """Positions of the examples the policy is fitted on and of those that certify the
    threshold: ``FIT_SHARE`` of them (at least ``MIN_FIT``, at most half), spread evenly over
    the held-out set so that both parts span the same time."""
    n_fit = min(max(round(FIT_SHARE * n), MIN_FIT), n // 2)
    fit = {round(k * n / n_fit) for k in range(n_fit)} if n_fit else set()
    return sorted(fit), [i for i in range(n) if i not in fit]


def probability_policy(
    labels: Sequence[bool],
    label_rates: LabelAgreement | None = None,
    fold_rates: tuple[list[dict[str, float]], list[float]] | None = None,
) -> CalibratedPolicy:
    """The smoothed agreement rate of ``labels`` times the answer's (geometric mean token)
    probability: ranks answers by that probability alone, whatever the labels, so a threshold
    certified on the same examples is tested in an order fixed before their labels. With
    ``label_rates``: the answer's label rate times its first-token margin (the rates come
    from other examples, so the order is still fixed before these labels)."""
    n, agreed = len(labels), sum(bool(x) for x in labels)
    rates = label_rates.rates if label_rates is not None else {}
    return CalibratedPolicy(
        method="prior",
        prior=(agreed + 1) / (n + 2),
        n_samples=n,
        n_agreed=agreed,
        label_rates=tuple(sorted(rates.items())),
        label_default=label_rates.default if label_rates is not None else 0.0,
        fold_rates=tuple(tuple(sorted(r.items())) for r in fold_rates[0]) if fold_rates else (),
        fold_defaults=tuple(fold_rates[1]) if fold_rates else (),
    )


def _nearest_miss_note(
    scores: Sequence[float],
    labels: Sequence[bool],
    weights: Sequence[float],
    config: GateConfig,
) -> str:
    """Why no threshold was certified on enough examples: what the best first test of a
    fixed sequence gave (the surest answers), or that no threshold could be tested."""
    miss = nearest_miss(
        scores,
        labels,
        config.target,
        config.confidence,
        config.bound,
        min_served=config.min_certified_served,
        weights=weights,
    )
    if miss is None or miss.expected_agreement is None or miss.agreement_lower_bound is None:
        return (
            f"no threshold certified on {len(scores)} held-out answers: too few for a lower "
            f"bound of {config.target:g} at confidence {config.confidence:g} even if every "
            "one agreed"
        )
    return (
        f"no threshold certified on {len(scores)} held-out answers: at best, the "
        f"{miss.n_served} the student is surest of agree {miss.expected_agreement:.3f}, lower "
        f"bound {miss.agreement_lower_bound:.3f} < {config.target:g} at confidence "
        f"{miss.confidence:.4g}"
    )


def _why_nothing(n_check: int, config: GateConfig) -> str | None:
    if n_check < config.min_certified_served:
        return (
            f"{n_check} examples to certify on < min_certified_served "
            f"{config.min_certified_served}: no threshold certified"
        )
    return None


def champion_served(
    router: Mapping[str, Any],
    features: Sequence[Mapping[str, Any]],
    agreed: Sequence[bool],
    weights: Sequence[float] | None = None,
    keep: Sequence[bool] | None = None,
) -> Served:
    """What a model, under its stored router, would serve of the same examples (those flagged
    in ``keep``, when given)."""
    spec = RouterSpec.from_dict(router)
    if spec.threshold is not None:
        decider = Router(spec.policy, spec.threshold)
    else:
        decider = Router(spec.policy, fixed_threshold=RouterConfig.fixed_threshold)
    w = list(weights) if weights else [1.0] * len(agreed)
    rows = [
        (decider.decide(Features.from_dict(f)).serve, bool(a), x)
        for f, a, x, k in zip(features, agreed, w, keep or [True] * len(agreed), strict=True)
        if k
    ]
    return Served.of([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def unseen_by(window: Mapping[str, Any], created_at: Sequence[float]) -> list[bool]:
    """Which held-out examples a champion never trained on, from the data window it was
    promoted with: its own held-out slice began at ``eval_from``, and a held-out example from
    then on was in that slice or is newer than the champion (older ones it trained on, and
    judged on them it would look better than it is)."""
    since = window.get("eval_from")
    return [since is None or t >= since for t in created_at]


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
        method=choice.method,
        min_served=choice.min_served,
    )


def _fit(features: Sequence[Mapping[str, Any]], labels: Sequence[bool]) -> CalibratedPolicy:
    return CalibratedPolicy.fit(list(features), list(labels))


def confidence_levels(router: RouterSpec, features: Sequence[Mapping[str, Any]]) -> int:
    """Distinct confidences (to 6 decimals) the stored policy gives the held-out answers: few
    levels mean the threshold cannot tell answers apart, so coverage cannot be traded for
    quality between them."""
    if router.policy is None:
        return 0
    return len({round(score, 6) for score in router.policy.scores(list(features))})
