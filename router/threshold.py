"""Choosing the serving threshold for a quality target, under a conservative bound.

The student serves an answer when its score is at least the threshold. On calibration data
(scores and whether the student agreed with the teacher), :func:`choose_threshold` picks the
threshold that serves the most while the *lower confidence bound* of the agreement on the
served answers, not its point estimate, meets the target.

:func:`certify_threshold` is the one the distiller certifies a student with. Scanning every
threshold and keeping the widest whose bound passes is many tests at once: the chosen one is
the luckiest, and its bound is too high. It tests instead in a fixed sequence, from the
strictest threshold serving at least ``min_served`` calibration examples down, and stops at the
first that fails (the fixed-sequence procedure of Learn-then-Test, Angelopoulos et al. 2021):
the order depends on the scores alone, so the chance that the chosen threshold's true agreement
is below the target is at most ``1 - confidence``. Examples may carry weights (one drawn with
half the chance of another counts twice); the bound is then taken on the effective sample size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

BOUNDS = ("wilson", "clopper_pearson")


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and what it gave on the calibration data.

    ``threshold`` is ``math.inf`` when no threshold meets the target: nothing is served.
    ``expected_agreement`` and ``agreement_lower_bound`` are ``None`` when nothing is served.
    """

    threshold: float
    expected_coverage: float
    expected_agreement: float | None
    agreement_lower_bound: float | None
    n_calibration: int
    quality_target: float
    confidence: float
    bound: str = "wilson"
    n_served: int | None = None
    """Calibration examples at or above the threshold (the bound's sample; None: not recorded)."""
    method: str = "scan"
    """``scan`` (:func:`choose_threshold`) or ``fixed_sequence`` (:func:`certify_threshold`)."""
    min_served: int = 0
    """Fewest served calibration examples a threshold needed to be tested."""

    @property
    def serves_nothing(self) -> bool:
        return math.isinf(self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (``threshold`` is ``None`` when nothing is served)."""
        return {
            "threshold": None if self.serves_nothing else self.threshold,
            "expected_coverage": self.expected_coverage,
            "expected_agreement": self.expected_agreement,
            "agreement_lower_bound": self.agreement_lower_bound,
            "n_calibration": self.n_calibration,
            "quality_target": self.quality_target,
            "confidence": self.confidence,
            "bound": self.bound,
            "n_served": self.n_served,
            "method": self.method,
            "min_served": self.min_served,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdChoice:
        threshold = data.get("threshold")
        return cls(
            threshold=math.inf if threshold is None else float(threshold),
            expected_coverage=float(data["expected_coverage"]),
            expected_agreement=_opt_float(data.get("expected_agreement")),
            agreement_lower_bound=_opt_float(data.get("agreement_lower_bound")),
            n_calibration=int(data["n_calibration"]),
            quality_target=float(data["quality_target"]),
            confidence=float(data["confidence"]),
            bound=str(data.get("bound", "wilson")),
            n_served=None if data.get("n_served") is None else int(data["n_served"]),
            method=str(data.get("method", "scan")),
            min_served=int(data.get("min_served") or 0),
        )


def lower_bound(agreed: float, n: float, confidence: float = 0.95, bound: str = "wilson") -> float:
    """One-sided lower confidence bound of a proportion ``agreed / n`` (0 when ``n == 0``).
    The counts may be fractional (an effective sample size of weighted examples).

    ``wilson``: the Wilson score bound. ``clopper_pearson``: the exact (beta) bound, needs
    scipy.
    """
    _check_confidence(confidence)
    if not 0 <= agreed <= n:
        raise ValueError(f"need 0 <= agreed <= n, got {agreed} of {n}")
    if n == 0:
        return 0.0
    if bound == "wilson":
        z = NormalDist().inv_cdf(confidence)
        p = agreed / n
        z2n = z * z / n
        centre = p + z2n / 2
        spread = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
        return max(0.0, (centre - spread) / (1 + z2n))
    if bound == "clopper_pearson":
        if agreed == 0:
            return 0.0
        from scipy.stats import beta

        return float(beta.ppf(1 - confidence, agreed, n - agreed + 1))
    raise ValueError(f"unknown bound {bound!r}; known: {BOUNDS}")


def upper_bound(agreed: float, n: float, confidence: float = 0.95, bound: str = "wilson") -> float:
    """One-sided upper confidence bound of a proportion ``agreed / n`` (1 when ``n == 0``)."""
    if not 0 <= agreed <= n:
        raise ValueError(f"need 0 <= agreed <= n, got {agreed} of {n}")
    return 1.0 - lower_bound(n - agreed, n, confidence, bound) if n else 1.0


def choose_threshold(
    scores: Sequence[float],
    labels: Sequence[bool],
    quality_target: float,
    confidence: float = 0.95,
    bound: str = "wilson",
) -> ThresholdChoice:
    """The threshold with the largest coverage whose served subset's agreement lower bound
    is at least ``quality_target``; serves nothing when no threshold reaches it.

    Candidate thresholds are the distinct scores (serving everything scored at or above it).
    Ties stay together: answers with equal scores are served or deferred as one.
    """
    _check_inputs(scores, labels, quality_target, confidence, bound)
    n_total = len(scores)
    best: ThresholdChoice | None = None
    served = agreed = 0
    for score, group in _groups_by_score(scores, labels):
        served += len(group)
        agreed += sum(group)
        low = lower_bound(agreed, served, confidence, bound)
        if low >= quality_target:
            best = ThresholdChoice(
                threshold=score,
                expected_coverage=served / n_total,
                expected_agreement=agreed / served,
                agreement_lower_bound=low,
                n_calibration=n_total,
                quality_target=quality_target,
                confidence=confidence,
                bound=bound,
            )
    return best or _serve_nothing(n_total, quality_target, confidence, bound)


def certify_threshold(
    scores: Sequence[float],
    labels: Sequence[bool],
    quality_target: float,
    confidence: float = 0.95,
    bound: str = "clopper_pearson",
    *,
    min_served: int = 30,
    weights: Sequence[float] | None = None,
) -> ThresholdChoice:
    """The widest threshold certified by fixed-sequence testing; serves nothing when none is.

    Thresholds are the distinct scores, highest first. Those serving fewer than
    ``min_served`` calibration examples, or too few for the bound to reach the target even if
    every one agreed, are not tested (both depend on the scores alone, never on the labels);
    from the first serving enough, each is tested in turn (lower bound of the weighted agreement of
    what it serves, on the effective sample size, at least ``quality_target``) and the
    sequence stops at the first that fails. Coverage is the weighted share served.
    """
    _check_inputs(scores, labels, quality_target, confidence, bound)
    w = [1.0] * len(scores) if weights is None else [float(x) for x in weights]
    if len(w) != len(scores) or any(not x > 0 or math.isinf(x) for x in w):
        raise ValueError("weights must be one positive finite number per score")
    n_total, w_total = len(scores), math.fsum(w)
    best: ThresholdChoice | None = None
    served = 0
    s_w = s_w2 = s_agreed = 0.0
    for score, group in _weighted_groups(scores, labels, w):
        served += len(group)
        s_w += math.fsum(x for x, _ in group)
        s_w2 += math.fsum(x * x for x, _ in group)
        s_agreed += math.fsum(x for x, agreed in group if agreed)
        n_eff = s_w * s_w / s_w2
        if served < min_served or lower_bound(n_eff, n_eff, confidence, bound) < quality_target:
            continue  # too few to test, or to pass even if every one agreed: not tested
        low = lower_bound(min(n_eff, n_eff * s_agreed / s_w), n_eff, confidence, bound)
        if low < quality_target:
            break
        best = ThresholdChoice(
            threshold=score,
            expected_coverage=s_w / w_total,
            expected_agreement=s_agreed / s_w,
            agreement_lower_bound=low,
            n_calibration=n_total,
            quality_target=quality_target,
            confidence=confidence,
            bound=bound,
            n_served=served,
            method="fixed_sequence",
            min_served=min_served,
        )
    if best is not None:
        return best
    nothing = _serve_nothing(n_total, quality_target, confidence, bound)
    return replace(nothing, method="fixed_sequence", min_served=min_served)


def threshold_stats(
    scores: Sequence[float],
    labels: Sequence[bool],
    threshold: float,
    quality_target: float,
    confidence: float = 0.95,
    bound: str = "wilson",
) -> ThresholdChoice:
    """What a fixed ``threshold`` gives on calibration data (no search): its coverage,
    agreement and lower bound. It may miss ``quality_target``; compare the bound with it."""
    _check_inputs(scores, labels, quality_target, confidence, bound)
    group = [label for score, label in zip(scores, labels, strict=True) if score >= threshold]
    served, agreed = len(group), sum(bool(label) for label in group)
    return ThresholdChoice(
        threshold=float(threshold),
        expected_coverage=served / len(scores) if scores else 0.0,
        expected_agreement=agreed / served if served else None,
        agreement_lower_bound=lower_bound(agreed, served, confidence, bound) if served else None,
        n_calibration=len(scores),
        quality_target=quality_target,
        confidence=confidence,
        bound=bound,
    )


def _groups_by_score(
    scores: Sequence[float], labels: Sequence[bool]
) -> list[tuple[float, list[bool]]]:
    """(score, labels with that score), highest score first."""
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: p[0], reverse=True)
    groups: list[tuple[float, list[bool]]] = []
    for score, label in pairs:
        if groups and groups[-1][0] == score:
            groups[-1][1].append(bool(label))
        else:
            groups.append((float(score), [bool(label)]))
    return groups


def _weighted_groups(
    scores: Sequence[float], labels: Sequence[bool], weights: Sequence[float]
) -> list[tuple[float, list[tuple[float, bool]]]]:
    """(score, (weight, label) pairs with that score), highest score first."""
    rows = sorted(zip(scores, weights, labels, strict=True), key=lambda r: r[0], reverse=True)
    groups: list[tuple[float, list[tuple[float, bool]]]] = []
    for score, weight, label in rows:
        if groups and groups[-1][0] == score:
            groups[-1][1].append((weight, bool(label)))
        else:
            groups.append((float(score), [(weight, bool(label))]))
    return groups


def _serve_nothing(n: int, quality_target: float, confidence: float, bound: str) -> ThresholdChoice:
    return ThresholdChoice(
        threshold=math.inf,
        expected_coverage=0.0,
        expected_agreement=None,
        agreement_lower_bound=None,
        n_calibration=n,
        quality_target=quality_target,
        confidence=confidence,
        bound=bound,
    )


def _check_inputs(
    scores: Sequence[float],
    labels: Sequence[bool],
    quality_target: float,
    confidence: float,
    bound: str,
) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if any(math.isnan(s) for s in scores):
        raise ValueError("scores contain NaN")
    if not 0 < quality_target <= 1:
        raise ValueError(f"quality_target must be in (0, 1], got {quality_target}")
    _check_confidence(confidence)
    if bound not in BOUNDS:
        raise ValueError(f"unknown bound {bound!r}; known: {BOUNDS}")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
