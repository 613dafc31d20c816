import json
import math

import pytest

from understudy.router import (
    CalibratedPolicy,
    RouterSpec,
    ThresholdChoice,
    choose_threshold,
    extract_features,
)


def fitted_spec() -> RouterSpec:
    features = [extract_features([-0.01 * (i % 7)], [-0.01, -3.0], text="x") for i in range(40)]
    labels = [i % 7 < 5 for i in range(40)]
    policy = CalibratedPolicy.fit(features, labels)
    choice = choose_threshold(policy.scores(features), labels, 0.7)
    return RouterSpec("json", 0.7, policy, choice)


def test_round_trips_through_json():
    spec = fitted_spec()
    stored = json.loads(json.dumps(spec.to_dict()))
    assert list(stored) == ["kind", "quality_target", "policy", "threshold"]
    assert stored["policy"]["name"] == "calibrated"
    assert RouterSpec.from_dict(stored) == spec


def test_a_model_registered_without_a_router_reads_as_the_default():
    for stored in (None, {}):
        spec = RouterSpec.from_dict(stored)
        assert spec == RouterSpec()
        assert (spec.kind, spec.quality_target, spec.policy, spec.threshold) == (
            "label",
            None,
            None,
            None,
        )
    assert RouterSpec().to_dict() == {"kind": "label"}


def test_reads_what_older_versions_stored():
    stored = {
        "kind": "text",
        "quality_target": 1,
        "policy": {},
        "threshold": None,
        "fitted_at": 1700000000,
    }
    spec = RouterSpec.from_dict(stored)
    assert spec == RouterSpec("text", 1.0)
    assert isinstance(spec.quality_target, float)


def test_a_threshold_that_serves_nothing_is_stored_as_null():
    choice = ThresholdChoice(math.inf, 0.0, None, None, 10, 0.99, 0.95)
    stored = RouterSpec("label", 0.99, None, choice).to_dict()
    assert stored["threshold"]["threshold"] is None
    assert RouterSpec.from_dict(stored).threshold == choice


def test_a_policy_fitted_on_other_features_is_refused():
    stored = fitted_spec().to_dict()
    stored["policy"]["features"] = ["length_tokens"]
    with pytest.raises(ValueError, match="fitted on features"):
        RouterSpec.from_dict(stored)
