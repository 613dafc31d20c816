import pytest

from understudy.distiller.config import GateConfig
from understudy.distiller.gates import evaluate_gates, failed_reason, non_inferiority


def test_non_inferiority_bound_of_equal_models_is_within_a_small_margin():
    same = [True] * 90 + [False] * 10
    for method in ("mcnemar", "bootstrap"):
        result = non_inferiority(same, same, method=method)
        assert result.difference == 0 and result.lower_bound == 0
        assert (result.candidate_only, result.champion_only, result.n) == (0, 0, 100)


def test_a_clearly_worse_candidate_has_a_negative_bound():
    champion = [True] * 90 + [False] * 10
    candidate = [False] * 30 + [True] * 60 + [False] * 10
    for method in ("mcnemar", "bootstrap"):
        result = non_inferiority(candidate, champion, method=method)
        assert result.difference == pytest.approx(-0.3)
        assert result.lower_bound < -0.2
        assert result.champion_only == 30


def test_a_slightly_better_candidate_passes_and_more_data_tightens_the_bound():
    small = non_inferiority([True, True, False, True], [True, False, False, True])
    large = non_inferiority([True, True, False, True] * 50, [True, False, False, True] * 50)
    assert small.difference == large.difference == pytest.approx(0.25)
    assert small.lower_bound < large.lower_bound <= 0.25


def test_mismatched_examples_are_refused():
    with pytest.raises(ValueError):
        non_inferiority([True], [True, False])


def gates(config=None, **kw):
    values = dict(
        agreement=0.9,
        coverage=0.5,
        validity=1.0,
        golden=[True, True],
        candidate_agreed=[True] * 9 + [False],
        champion_agreed=None,
    )
    values.update(kw)
    return {g.name: g for g in evaluate_gates(config or GateConfig(), **values)}


def test_every_gate_records_value_threshold_and_verdict():
    result = gates()
    assert set(result) == {"agreement", "coverage", "non_inferiority", "validity", "golden"}
    assert all(g.passed for g in result.values())
    assert (result["agreement"].value, result["agreement"].threshold) == (0.9, 0.7)
    assert result["non_inferiority"].detail == "no champion yet"
    assert result["golden"].value == 1.0


def test_each_gate_can_fail_and_the_reason_names_it():
    config = GateConfig(min_agreement=0.95, min_coverage=0.6, min_validity=0.99)
    result = gates(
        config,
        validity=0.9,
        golden=[True, False],
        candidate_agreed=[False] * 10,
        champion_agreed=[True] * 10,
    )
    assert not any(g.passed for g in result.values())
    reason = failed_reason(list(result.values()))
    for name in ("agreement 0.900 < 0.950", "coverage", "non_inferiority", "validity", "golden"):
        assert name in reason
    assert failed_reason([g for g in result.values() if g.name == "x"]) is None


def test_golden_gate_can_be_made_advisory():
    result = gates(GateConfig(require_golden=False), golden=[False])
    assert result["golden"].passed and result["golden"].value == 0.0
    assert gates(golden=[])["golden"].detail == "no golden examples"
