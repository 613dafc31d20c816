"""The routing decision: features of a student answer in, serve-or-defer out. Pure: no I/O.

Importing it is cheap (no numpy, scikit-learn or torch); fitting imports scikit-learn.
"""

from typing import Any

from understudy.router.agreement import CHRF_THRESHOLD, answers_agree, chrf, normalise_label
from understudy.router.decision import BELOW_THRESHOLD, CONFIDENT, Decision, Router
from understudy.router.features import FEATURE_NAMES, Features, extract_features, first_token_margin
from understudy.router.json_schema import json_equal, matches_schema
from understudy.router.monitor import AgreementMonitor
from understudy.router.policy import (
    POLICIES,
    CalibratedPolicy,
    ConfidencePolicy,
    MeanProbabilityPolicy,
    load_policy,
    register_policy,
)
from understudy.router.shadow import ShadowSampler
from understudy.router.spec import RouterSpec
from understudy.router.threshold import (
    ThresholdChoice,
    certify_threshold,
    choose_threshold,
    lower_bound,
    nearest_miss,
    sequence_starts,
    threshold_stats,
    upper_bound,
)
from understudy.router.validity import CHECK_REASONS, failed_check

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
    "RouterSpec",
    "ShadowSampler",
    "ThresholdChoice",
    "answers_agree",
    "bench_decision_time",
    "certify_threshold",
    "choose_threshold",
    "chrf",
    "extract_features",
    "failed_check",
    "first_token_margin",
    "json_equal",
    "load_policy",
    "lower_bound",
    "matches_schema",
    "nearest_miss",
    "normalise_label",
    "register_policy",
    "sequence_starts",
    "threshold_stats",
    "upper_bound",
]


def __getattr__(name: str) -> Any:
    # The benchmark is loaded on first use so ``python -m understudy.router.bench`` runs it cleanly.
    if name == "bench_decision_time":
        from understudy.router.bench import bench_decision_time

        return bench_decision_time
    raise AttributeError(f"module 'router' has no attribute {name!r}")
