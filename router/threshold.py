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
is below the target is at most ``1 - confidence``. One sequence from the strictest threshold
stops for good when its first few served answers hold a few disagreements, however well the
hundreds below them agree (a run's 512 held-out answers: 45 of the first 50 agreed, 226 of the
first 250). So several sequences run, each from a threshold fixed by the scores alone (the
first serving ``min_served``, twice as many, four times...), each at ``1 - confidence`` split
evenly between them, and the widest threshold any of them certifies is kept: the chance that
any of them certifies a threshold below the target is still at most ``1 - confidence``.
Examples may carry weights (one drawn with half the chance of another counts twice); the
bound is then taken on the effective sample size.
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
    sequences: int = 1
    """Fixed sequences tested (:func:`sequence_starts`); each at ``1 - confidence`` divided
    by this, the confidence of ``agreement_lower_bound``."""

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
            "sequences": self.sequences,
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
            sequences=int(data.get("sequences") or 1),
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

    Thresholds are the distinct scores, highest first. Each sequence (:func:`sequence_starts`)
    begins at the first threshold serving its number of calibration examples and tests it and
    each looser one in turn (lower bound of the weighted agreement of what it serves, on the
    effective sample size, at least ``quality_target``, at ``1 - (1 - confidence) / m`` for
    ``m`` sequences), stopping at the first that fails; thresholds serving too few for the
    bound to reach the target even if every one agreed are not tested (both depend on the
    scores alone, never on the labels). The widest threshold certified is kept. Coverage is
    the weighted share served.
    """
    _check_inputs(scores, labels, quality_target, confidence, bound)
    plan = _Plan.of(scores, labels, quality_target, confidence, bound, min_served, weights)
    lows: dict[int, float] = {}  # each threshold's bound, taken once whichever sequence tests it
    best: ThresholdChoice | None = None
    for start in plan.starts:
        for i, step in enumerate(plan.steps):
            if step[1] < start:
                continue  # before the sequence's start
            if i not in lows:
                lows[i] = _step_bound(step, plan.level, bound)
            if lows[i] < quality_target:
                break
            if best is None or step[0] < best.threshold:
                best = plan.choice(step, lows[i], confidence, "fixed_sequence")
    if best is not None:
        return best
    nothing = _serve_nothing(plan.n_total, quality_target, confidence, bound)
    return replace(
        nothing, method="fixed_sequence", min_served=min_served, sequences=len(plan.starts)
    )


def nearest_miss(
    scores: Sequence[float],
    labels: Sequence[bool],
    quality_target: float,
    confidence: float = 0.95,
    bound: str = "clopper_pearson",
    *,
    min_served: int = 30,
    weights: Sequence[float] | None = None,
) -> ThresholdChoice | None:
    """When :func:`certify_threshold` certifies nothing, what came closest: each fixed
    sequence then failed its first test, and this is the one of those first tests whose lower
    bound was highest (at the level the sequences are tested at), with what its threshold
    serves. It says why nothing is served (the surest answers disagree too often, or are too
    few); it certifies nothing. None when no threshold was tested: none serves enough for
    its bound to reach the target even if every answer agreed."""
    _check_inputs(scores, labels, quality_target, confidence, bound)
    plan = _Plan.of(scores, labels, quality_target, confidence, bound, min_served, weights)
    best: ThresholdChoice | None = None
    for start in plan.starts:
        step = next((step for step in plan.steps if step[1] >= start), None)
        if step is None:
            break
        low = _step_bound(step, plan.level, bound)
        if best is None or low > (best.agreement_lower_bound or 0.0):
            best = plan.choice(step, low, plan.level, "nearest_miss")
    return best


_Step = tuple[float, int, float, float, float]
"""A threshold and what it serves: score, examples, sum of weights, of squared weights, and of
the weights that agreed."""


@dataclass(frozen=True)
class _Plan:
    """The fixed sequences of one certification: where they start, the level each is tested
    at, and the thresholds they may test."""

    n_total: int
    w_total: float
    starts: list[int]
    level: float
    steps: list[_Step]
    quality_target: float
    bound: str
    min_served: int

    @classmethod
    def of(
        cls,
        scores: Sequence[float],
        labels: Sequence[bool],
        quality_target: float,
        confidence: float,
        bound: str,
        min_served: int,
        weights: Sequence[float] | None,
    ) -> _Plan:
        w = _weights(scores, weights)
        starts = sequence_starts(min_served, len(scores))
        level = 1 - (1 - confidence) / len(starts)
        steps = _testable(scores, labels, w, quality_target, level, bound)
        return cls(
            len(scores), math.fsum(w), starts, level, steps, quality_target, bound, min_served
        )

    def choice(self, step: _Step, low: float, confidence: float, method: str) -> ThresholdChoice:
        """``step`` as a threshold choice with the lower bound ``low``."""
        score, served, s_w, _, s_agreed = step
        return ThresholdChoice(
            threshold=score,
            expected_coverage=s_w / self.w_total,
            expected_agreement=s_agreed / s_w,
            agreement_lower_bound=low,
            n_calibration=self.n_total,
            quality_target=self.quality_target,
            confidence=confidence,
            bound=self.bound,
            n_served=served,
            method=method,
            min_served=self.min_served,
            sequences=len(self.starts),
        )


def _step_bound(step: _Step, level: float, bound: str) -> float:
    """The lower bound of the weighted agreement of what ``step`` serves, on its effective
    sample size."""
    n_eff = _n_eff(step)
    return lower_bound(min(n_eff, n_eff * step[4] / step[2]), n_eff, level, bound)


def _weights(scores: Sequence[float], weights: Sequence[float] | None) -> list[float]:
    w = [1.0] * len(scores) if weights is None else [float(x) for x in weights]
    if len(w) != len(scores) or any(not x > 0 or math.isinf(x) for x in w):
        raise ValueError("weights must be one positive finite number per score")
    return w


def _testable(
    scores: Sequence[float],
    labels: Sequence[bool],
    w: Sequence[float],
    quality_target: float,
    level: float,
    bound: str,
) -> list[_Step]:
    """The thresholds a sequence may test, highest first: those serving too few to pass even
    if every one agreed are never tested."""
    return [
        step
        for step in _cumulative(_weighted_groups(scores, labels, w))
        if lower_bound(_n_eff(step), _n_eff(step), level, bound) >= quality_target
    ]


def sequence_starts(min_served: int, n: int) -> list[int]:
    """Where the fixed sequences of :func:`certify_threshold` begin, in served calibration
    examples: ``min_served``, then doubling while at most ``n`` (a single one when ``n`` is
    under twice ``min_served``)."""
    starts = [max(1, min_served)]
    while starts[-1] * 2 <= n:
        starts.append(starts[-1] * 2)
    return starts


def _n_eff(step: tuple[float, int, float, float, float]) -> float:
    """The effective sample size of what a threshold serves: (sum w)^2 / sum w^2."""
    _, _, s_w, s_w2, _ = step
    return s_w * s_w / s_w2


def _cumulative(
    groups: list[tuple[float, list[tuple[float, bool]]]],
) -> list[tuple[float, int, float, float, float]]:
    """For each distinct score, highest first: what a threshold there serves (examples,
    sum of weights, sum of squared weights, weight that agreed)."""
    steps = []
    served, s_w, s_w2, s_agreed = 0, 0.0, 0.0, 0.0
    for score, group in groups:
        served += len(group)
        s_w += math.fsum(x for x, _ in group)
        s_w2 += math.fsum(x * x for x, _ in group)
        s_agreed += math.fsum(x for x, agreed in group if agreed)
        steps.append((score, served, s_w, s_w2, s_agreed))
    return steps


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
