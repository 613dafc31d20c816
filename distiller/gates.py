"""Step 5: the gates a candidate must pass before it is promoted.

Each gate records its value, its threshold and its verdict. Promotion needs all of them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from understudy.distiller.config import GateConfig


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


def evaluate_gates(
    config: GateConfig,
    *,
    agreement: float,
    coverage: float,
    validity: float,
    golden: Sequence[bool],
    candidate_agreed: Sequence[bool],
    champion_agreed: Sequence[bool] | None,
) -> list[GateResult]:
    """Every gate's verdict; ``champion_agreed`` is None when the task has no champion yet."""
    agreement, coverage, validity = (round(x, 4) for x in (agreement, coverage, validity))
    gates = [
        GateResult(
            "agreement",
            agreement,
            config.min_agreement,
            agreement >= config.min_agreement,
            "agreement with the teacher on the held-out set",
        ),
        GateResult(
            "coverage",
            coverage,
            config.min_coverage,
            coverage >= config.min_coverage,
            f"share served at quality target {config.target:g}",
        ),
        _non_inferiority_gate(config, candidate_agreed, champion_agreed),
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


def _non_inferiority_gate(
    config: GateConfig, candidate: Sequence[bool], champion: Sequence[bool] | None
) -> GateResult:
    margin = -config.non_inferiority_margin
    if champion is None:
        return GateResult("non_inferiority", None, margin, True, "no champion yet")
    result = non_inferiority(
        candidate,
        champion,
        confidence=config.confidence,
        method=config.non_inferiority_test,
    )
    return GateResult(
        "non_inferiority",
        round(result.lower_bound, 4),
        margin,
        result.lower_bound >= margin,
        f"candidate - champion = {result.difference:+.3f} "
        f"({result.candidate_only} vs {result.champion_only} discordant of {result.n}; "
        f"{config.non_inferiority_test}, {config.confidence:g} lower bound)",
    )


def failed_reason(gates: Sequence[GateResult]) -> str | None:
    """A one-line reason naming each failed gate, or None when all passed."""
    failed = [g for g in gates if not g.passed]
    if not failed:
        return None
    return "; ".join(f"{g.name} {_fmt(g.value)} < {_fmt(g.threshold)}" for g in failed)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
