"""The routing decision: features of a student answer in, serve-or-defer out. Pure: no I/O.

Importing it is cheap (no numpy, scikit-learn or torch); fitting imports scikit-learn.
"""

from typing import Any

from router.agreement import CHRF_THRESHOLD, answers_agree, chrf, normalise_label
from router.decision import BELOW_THRESHOLD, CONFIDENT, Decision, Router
from router.features import FEATURE_NAMES, Features, extract_features, first_token_margin
from router.json_schema import json_equal, matches_schema
from router.monitor import AgreementMonitor
from router.policy import (
    POLICIES,
    CalibratedPolicy,
    ConfidencePolicy,
    MeanProbabilityPolicy,
    load_policy,
    register_policy,
)
from router.shadow import ShadowSampler
from router.threshold import (
    ThresholdChoice,
    choose_threshold,
    lower_bound,
    threshold_stats,
    upper_bound,
)
from router.validity import CHECK_REASONS, failed_check

__all__ = [
    "BELOW_THRESHOLD",
    "CHECK_REASONS",
    "CHRF_THRESHOLD",
    "CONFIDENT",
    "FEATURE_NAMES",
    "POLICIES",
    "AgreementMonitor",
    "CalibratedPolicy",
    "ConfidencePolicy",
    "Decision",
    "Features",
    "MeanProbabilityPolicy",
    "Router",
    "ShadowSampler",
    "ThresholdChoice",
    "answers_agree",
    "bench_decision_time",
    "choose_threshold",
    "chrf",
    "extract_features",
    "failed_check",
    "first_token_margin",
    "json_equal",
    "load_policy",
    "lower_bound",
    "matches_schema",
    "normalise_label",
    "register_policy",
    "threshold_stats",
    "upper_bound",
]


def __getattr__(name: str) -> Any:
    # The benchmark is loaded on first use so ``python -m router.bench`` runs it cleanly.
    if name == "bench_decision_time":
        from router.bench import bench_decision_time

        return bench_decision_time
    raise AttributeError(f"module 'router' has no attribute {name!r}")
