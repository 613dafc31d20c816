"""The decision: serve the student's answer, or defer to the teacher."""

from __future__ import annotations

import math
from dataclasses import dataclass

from understudy.router.features import Features
from understudy.router.policy import ConfidencePolicy, MeanProbabilityPolicy
from understudy.router.threshold import ThresholdChoice

CONFIDENT = "confident"
BELOW_THRESHOLD = "below_threshold"


@dataclass(frozen=True)
class Decision:
    """``reason``: ``confident``, ``below_threshold`` or the failed validity check's reason
    (``truncated``, ``empty``, ``unknown_tool``, ``invalid_tool_arguments``, ``invalid_json``,
    ``schema_mismatch``)."""

    serve: bool
    confidence: float
    reason: str


class Router:
    """Scores an answer with a policy and serves it when the score reaches the threshold.

    The threshold is a calibrated :class:`ThresholdChoice` or, in fixed mode,
    ``fixed_threshold``. Without a policy, the confidence is the geometric mean token
    probability (:class:`MeanProbabilityPolicy`). An answer failing a validity check is
    never served, whatever its confidence.
    """

    def __init__(
        self,
        policy: ConfidencePolicy | None = None,
        threshold_choice: ThresholdChoice | None = None,
        *,
        fixed_threshold: float | None = None,
    ) -> None:
        if threshold_choice is not None and fixed_threshold is None:
            threshold = threshold_choice.threshold
        elif fixed_threshold is not None and threshold_choice is None:
            if math.isnan(fixed_threshold):
                raise ValueError("fixed_threshold is NaN")
            threshold = float(fixed_threshold)
        else:
            raise ValueError("give exactly one of threshold_choice and fixed_threshold")
        self.policy = policy if policy is not None else MeanProbabilityPolicy()
        self.threshold_choice = threshold_choice
        self.threshold = threshold

    @property
    def mode(self) -> str:
        """``calibrated`` or ``fixed``."""
        return "fixed" if self.threshold_choice is None else "calibrated"

    def decide(self, features: Features) -> Decision:
        confidence = self.policy.score(features)
        if features.failed_check is not None:
            return Decision(False, confidence, features.failed_check)
        if confidence >= self.threshold:
            return Decision(True, confidence, CONFIDENT)
        return Decision(False, confidence, BELOW_THRESHOLD)
