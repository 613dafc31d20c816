import json
import math

import pytest

from understudy.router import (
    CHECK_REASONS,
    CalibratedPolicy,
    Decision,
    Router,
    ThresholdChoice,
    choose_threshold,
    extract_features,
)
from understudy.router.bench import synthetic_answers

SURE = [math.log(0.99)] * 4
UNSURE = [math.log(0.5)] * 4
TOOLS = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]


def test_fixed_threshold_without_a_policy_uses_the_geometric_mean_probability():
    router = Router(fixed_threshold=0.9)
    assert router.mode == "fixed" and router.threshold == 0.9
    decision = router.decide(extract_features(SURE, text="refund"))
    assert decision == Decision(True, pytest.approx(0.99), "confident")
    decision = router.decide(extract_features(UNSURE, text="refund"))
    assert decision == Decision(False, pytest.approx(0.5), "below_threshold")


def test_threshold_is_inclusive():
    f = extract_features([math.log(0.5)], text="x")
    assert Router(fixed_threshold=0.5).decide(f).serve
    assert not Router(fixed_threshold=0.5000001).decide(f).serve


INVALID_ANSWERS = {
    "truncated": dict(text="refu", finish_reason="length"),
    "empty": dict(text=" "),
    "invalid_json": dict(text="{", response_format={"type": "json_object"}),
    "schema_mismatch": dict(text="[]", response_format={"type": "json_object"}),
    "unknown_tool": dict(
        text="", tools=TOOLS, tool_calls=[{"function": {"name": "rm", "arguments": "{}"}}]
    ),
    "invalid_tool_arguments": dict(
        text="", tools=TOOLS, tool_calls=[{"function": {"name": "now", "arguments": "[]"}}]
    ),
}


@pytest.mark.parametrize("reason", CHECK_REASONS)
def test_a_failed_check_defers_whatever_the_confidence(reason):
    features = extract_features(SURE, **INVALID_ANSWERS[reason])
    decision = Router(fixed_threshold=0.0).decide(features)
    assert decision.serve is False
    assert decision.reason == reason
    assert decision.confidence == pytest.approx(0.99)


def test_calibrated_router_as_stored_with_a_student():
    features, labels = synthetic_answers(1500, seed=11)
    policy = CalibratedPolicy.fit(features, labels)
    choice = choose_threshold(policy.scores(features), labels, 0.9)
    stored = json.loads(json.dumps({"policy": policy.to_dict(), "threshold": choice.to_dict()}))
    router = Router(
        CalibratedPolicy.from_dict(stored["policy"]), ThresholdChoice.from_dict(stored["threshold"])
    )
    assert router.mode == "calibrated"
    decisions = [router.decide(f) for f in features]
    served = [label for d, label in zip(decisions, labels, strict=True) if d.serve]
    assert len(served) / len(labels) == pytest.approx(choice.expected_coverage)
    assert sum(served) / len(served) >= 0.9
    assert {d.reason for d in decisions} == {"confident", "below_threshold"}
    assert all(d.serve == (d.confidence >= choice.threshold) for d in decisions)


def test_a_choice_that_serves_nothing_never_serves():
    choice = choose_threshold([0.99, 0.98], [True, False], 0.99)
    router = Router(None, choice)
    assert router.threshold == math.inf
    decision = router.decide(extract_features([0.0] * 3, text="x"))
    assert decision == Decision(False, 1.0, "below_threshold")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"threshold_choice": choose_threshold([], [], 0.9), "fixed_threshold": 0.5}],
)
def test_router_needs_exactly_one_threshold(kwargs):
    with pytest.raises(ValueError, match="exactly one"):
        Router(None, **kwargs)


def test_nan_fixed_threshold_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        Router(fixed_threshold=math.nan)
