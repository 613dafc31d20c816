"""Step 5: the gates a candidate must pass before it is promoted.

Each gate records its value, its threshold and its verdict. Promotion needs all of them.
The default gates are the router's guarantee: the candidate serves something at the
certified quality target (``coverage``), its answers are well formed (``validity``), the
golden examples pass (``golden``), and on served traffic it is not worse than the champion
(``non_inferiority``: what each would serve of the same examples, and how often it agrees
there). Overall agreement on the held-out set (``agreement``) is a gate only when
``min_agreement`` is set: the router never serves the answers it is unsure of, so the
student's accuracy on them is not what users get.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from understudy.distiller.config import GateConfig
from understudy.distiller.figures import distinct


@dataclass
class GateResult:
    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NonInferiority:
    """Paired comparison of candidate and champion on the same examples."""

    difference: float
    """Candidate agreement minus champion agreement."""
    lower_bound: float
    """One-sided lower confidence bound of ``difference``."""
    candidate_only: int
    """Examples only the candidate got right."""
    champion_only: int
    """Examples only the champion got right."""
    n: int


def non_inferiority(
    candidate: Sequence[bool],
    champion: Sequence[bool],
    *,
    confidence: float = 0.95,
    method: str = "mcnemar",
    resamples: int = 2000,
    seed: int = 0,
) -> NonInferiority:
    """Lower confidence bound of the paired difference in agreement.

    ``mcnemar``: normal approximation on the discordant pairs (the variance McNemar's test
    uses). ``bootstrap``: percentile bound over resampled examples.
    """
    if len(candidate) != len(champion):
        raise ValueError("candidate and champion must be judged on the same examples")
    n = len(candidate)
    b = sum(1 for c, h in zip(candidate, champion, strict=True) if c and not h)
    c = sum(1 for cand, h in zip(candidate, champion, strict=True) if h and not cand)
    if n == 0:
        return NonInferiority(0.0, 0.0, 0, 0, 0)
    diff = (b - c) / n
    if method == "bootstrap":
        rng = random.Random(seed)
        deltas = [int(x) - int(y) for x, y in zip(candidate, champion, strict=True)]
        means = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(resamples))
        lower = means[int((1 - confidence) * resamples)]
    else:
        variance = max(b + c - (b - c) ** 2 / n, 0.0) / n**2
        lower = diff - NormalDist().inv_cdf(confidence) * variance**0.5
    return NonInferiority(diff, lower, b, c, n)


@dataclass(frozen=True)
class Served:
    """What one model would serve of the held-out examples under its router."""

    coverage: float
    """Share of the examples it would serve (weighted by each example's sample weight)."""
    n: int
    """Examples it would serve."""
    agreed: int
    """Of those, the ones where it agrees with the teacher."""
    weighted_agreement: float | None = None
    """Agreement on what it serves, each example weighted by its sample weight (None: the
    plain share ``agreed / n``)."""

    @property
    def agreement(self) -> float | None:
        if self.weighted_agreement is not None:
            return self.weighted_agreement
        return self.agreed / self.n if self.n else None

    @classmethod
    def of(
        cls,
        served: Sequence[bool],
        agreed: Sequence[bool],
        weights: Sequence[float] | None = None,
    ) -> Served:
        """From a served flag and an agreement flag (and a sample weight) per example."""
        w = [1.0] * len(served) if weights is None else list(weights)
        rows = list(zip(served, agreed, w, strict=True))
        n = sum(1 for s, _, _ in rows if s)
        total = sum(x for _, _, x in rows)
        on = sum(x for s, _, x in rows if s)
        agreement = sum(x for s, a, x in rows if s and a) / on if on else None
        return cls(
            on / total if total else 0.0,
            n,
            sum(1 for s, a, _ in rows if s and a),
            agreement if any(x != 1.0 for x in w) else None,
        )


def evaluate_gates(
    config: GateConfig,
    *,
    agreement: float,
    coverage: float,
    validity: float,
    golden: Sequence[bool],
    candidate_served: Served | None = None,
    champion_served: Served | None = None,
    coverage_note: str | None = None,
) -> list[GateResult]:
    """Every gate's verdict. ``candidate_served`` is what the candidate would serve at its
    certified threshold; ``champion_served`` what the champion would serve of the same
    examples under its own router (None when the task has no champion yet)."""
    agreement, coverage, validity = (round(x, 4) for x in (agreement, coverage, validity))
    gates = []
    if config.min_agreement is not None:
        gates.append(
            GateResult(
                "agreement",
                agreement,
                config.min_agreement,
                agreement >= config.min_agreement,
                "agreement with the teacher on the held-out set",
            )
        )
    gates += [
        GateResult(
            "coverage",
            coverage,
            config.min_coverage,
            coverage > 0 and coverage >= config.min_coverage,
            coverage_note
            or (
                f"share served at quality target {config.target:g}"
                + ("" if config.min_coverage else " (must be above 0)")
                if coverage > 0
                else f"nothing served at quality target {config.target:g}"
            ),
        ),
        served_non_inferiority(config, candidate_served, champion_served),
        GateResult(
            "validity",
            validity,
            config.min_validity,
            validity >= config.min_validity,
            "complete, well-formed answers",
        ),
    ]
    passed = sum(golden)
    detail = f"{passed}/{len(golden)} golden examples pass" if golden else "no golden examples"
    gates.append(
        GateResult(
            "golden",
            round(passed / len(golden), 4) if golden else None,
            1.0 if config.require_golden else None,
            passed == len(golden) or not config.require_golden,
            detail,
        )
    )
    return gates


def served_non_inferiority(
    config: GateConfig, candidate: Served | None, champion: Served | None
) -> GateResult:
    """Non-inferiority on served traffic, against the champion on the same examples.

    The candidate's served answers are already certified at the quality target (its
    threshold's lower bound meets it), so what it must not lose is the champion's usefulness:
    its coverage may be at most ``non_inferiority_margin`` below the champion's, and its
    agreement on what it serves at most that margin below the lower of the champion's and the
    target. The value is the coverage difference. A candidate that serves more at the
    certified quality passes, however its overall agreement compares.
    """
    margin = config.non_inferiority_margin
    if champion is None:
        return GateResult("non_inferiority", None, -margin, True, "no champion yet")
    candidate = candidate or Served(0.0, 0, 0)
    difference = round(candidate.coverage - champion.coverage, 4)
    floor = min(champion.agreement if champion.agreement is not None else 1.0, config.target)
    held = candidate.agreement is not None and candidate.agreement >= floor - margin
    return GateResult(
        "non_inferiority",
        difference,
        -margin,
        difference >= -margin and (held or champion.n == 0),
        f"served traffic: candidate serves {candidate.coverage:.3f} at agreement "
        f"{_fmt(candidate.agreement)}, champion {champion.coverage:.3f} at "
        f"{_fmt(champion.agreement)} of the same examples",
    )


def failed_reason(gates: Sequence[GateResult]) -> str | None:
    """A one-line reason naming each failed gate, or None when all passed."""
    failed = [g for g in gates if not g.passed]
    if not failed:
        return None
    return "; ".join(_failure(g) for g in failed)


def _failure(gate: GateResult) -> str:
    below = gate.value is None or gate.threshold is None or gate.value < gate.threshold
    if below:
        value, threshold = distinct(gate.value, gate.threshold)  # -0.0203 < -0.0200
        return f"{gate.name} {value} < {threshold}"
    if gate.name == "coverage":
        return f"coverage {_fmt(gate.value)}: {gate.detail}"
    return f"{gate.name}: {gate.detail}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
