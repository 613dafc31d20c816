"""Confidence features of one student answer, from its token log-probabilities."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from understudy.router.agreement import normalise_label
from understudy.router.validity import failed_check

LABEL_MAX_CHARS = 100
"""Longest answer (one line) kept as :attr:`Features.label`: a label-shaped answer."""
LOGPROB_FLOOR = -100.0
"""Token log-probabilities below this (``-inf``, vLLM's ``-9999``, NaN) count as this."""

FEATURE_NAMES = (
    "sequence_logprob",
    "mean_token_logprob",
    "mean_token_prob",
    "min_token_prob",
    "first_token_margin",
    "length_tokens",
)
"""The order of :meth:`Features.as_vector`."""


@dataclass(frozen=True)
class Features:
    """What the router knows about one answer.

    ``failed_check`` is the reason of the first validity check the answer fails (see
    :mod:`router.validity`), ``None`` when it passes them all.
    """

    sequence_logprob: float
    """Sum of the token log-probabilities (0 for no tokens)."""
    mean_token_logprob: float
    """``sequence_logprob / length_tokens``: the log of the geometric mean token probability."""
    mean_token_prob: float
    """Arithmetic mean of the token probabilities (0 for no tokens)."""
    min_token_prob: float
    """Smallest token probability (0 for no tokens)."""
    first_token_margin: float
    """p(top1) - p(top2) at the first generated token."""
    length_tokens: int
    """Number of generated tokens."""
    failed_check: str | None = None
    label: str | None = None
    """The answer as a label (:func:`normalise_label`) when it is one short line, else None:
    a policy may know how often the teacher agreed with each label the student gives."""
    fold: int | None = None
    """The request's fold, when the policy's label rates are per fold (the caller computes it
    from the request's text with the policy's number of folds); else None."""

    @property
    def valid(self) -> bool:
        return self.failed_check is None

    def as_vector(self) -> tuple[float, ...]:
        """The numbers the calibrated policy reads, in :data:`FEATURE_NAMES` order."""
        return (
            self.sequence_logprob,
            self.mean_token_logprob,
            self.mean_token_prob,
            self.min_token_prob,
            self.first_token_margin,
            float(self.length_tokens),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; ``label`` only when there is one (dicts stored before it existed are
        unchanged)."""
        data = asdict(self)
        for optional in ("label", "fold"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Features:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return cls(
            sequence_logprob=float(data["sequence_logprob"]),
            mean_token_logprob=float(data["mean_token_logprob"]),
            mean_token_prob=float(data["mean_token_prob"]),
            min_token_prob=float(data["min_token_prob"]),
            first_token_margin=float(data["first_token_margin"]),
            length_tokens=int(data["length_tokens"]),
            failed_check=data.get("failed_check"),
            label=data.get("label"),
            fold=None if data.get("fold") is None else int(data["fold"]),
        )


def extract_features(
    token_logprobs: Sequence[float],
    first_token_alternatives: Sequence[float] = (),
    text: str = "",
    finish_reason: str | None = "stop",
    response_format: Mapping[str, Any] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_calls: Sequence[Mapping[str, Any]] | None = None,
    fold: int | None = None,
) -> Features:
    """Features of one answer (``fold``: the request's, see :attr:`Features.fold`).

    ``token_logprobs`` are the log-probabilities of the generated tokens;
    ``first_token_alternatives`` the log-probabilities of the top-k candidates at the first
    step (may be empty). ``response_format`` and ``tools`` are the request's fields as in
    OpenAI chat JSON; ``tool_calls`` the answer's tool calls in the same shape, if any.
    """
    logprobs = [_clean(lp) for lp in token_logprobs]
    probs = [math.exp(lp) for lp in logprobs]
    n = len(logprobs)
    total = math.fsum(logprobs)
    return Features(
        sequence_logprob=total,
        mean_token_logprob=total / n if n else 0.0,
        mean_token_prob=math.fsum(probs) / n if n else 0.0,
        min_token_prob=min(probs) if n else 0.0,
        first_token_margin=first_token_margin(first_token_alternatives, logprobs[:1]),
        length_tokens=n,
        failed_check=failed_check(text, finish_reason, response_format, tools, tool_calls),
        label=as_label(text),
        fold=fold,
    )


def as_label(text: str) -> str | None:
    """``text`` as a label when it is one short line (:data:`LABEL_MAX_CHARS`), else None."""
    stripped = text.strip()
    if not stripped or len(stripped) > LABEL_MAX_CHARS or "\n" in stripped:
        return None
    return normalise_label(stripped)


def first_token_margin(alternatives: Sequence[float], first_logprob: Sequence[float] = ()) -> float:
    """p(top1) - p(top2) at the first step.

    With two or more alternatives: the gap between the two most likely. With fewer, the
    second-best probability is unknown but at most ``1 - p(top1)``, so the margin is at least
    ``max(0, 2 * p(top1) - 1)``, which is what is returned; ``p(top1)`` is the single
    alternative, or else the chosen first token's probability (``first_logprob``). With
    neither: 0.
    """
    alts = sorted((_clean(lp) for lp in alternatives), reverse=True)
    if len(alts) >= 2:
        return max(0.0, math.exp(alts[0]) - math.exp(alts[1]))
    known = alts or [_clean(lp) for lp in first_logprob]
    if not known:
        return 0.0
    return max(0.0, 2.0 * math.exp(known[0]) - 1.0)


def _clean(logprob: float) -> float:
    value = float(logprob)
    if math.isnan(value) or value < LOGPROB_FLOOR:
        return LOGPROB_FLOOR
    return min(value, 0.0)
