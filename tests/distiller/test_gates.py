import math

import pytest

from understudy.distiller.calibrate import calibrate, champion_served, unseen_by
from understudy.distiller.config import GateConfig
from understudy.distiller.evaluate import ModelEval
from understudy.distiller.gates import Served, evaluate_gates, failed_reason, non_inferiority
from understudy.router import extract_features


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
        candidate_served=Served(0.5, 50, 48),
        champion_served=None,
    )
    values.update(kw)
    return {g.name: g for g in evaluate_gates(config or GateConfig(), **values)}


def test_every_gate_records_value_threshold_and_verdict():
    result = gates(GateConfig(min_agreement=0.7))
    assert set(result) == {"agreement", "coverage", "non_inferiority", "validity", "golden"}
    assert all(g.passed for g in result.values())
    assert (result["agreement"].value, result["agreement"].threshold) == (0.9, 0.7)
    assert result["non_inferiority"].detail == "no champion yet"
    assert result["golden"].value == 1.0


def test_a_student_certified_at_the_target_passes_whatever_its_overall_agreement():
    # Found: "agreement 0.600 < 0.700 although coverage at the target was 0.24": the student
    # was rejected for answers the router would never have served.
    result = gates(agreement=0.6, coverage=0.24, candidate_served=Served(0.24, 24, 23))
    assert "agreement" not in result
    assert all(g.passed for g in result.values())
    assert failed_reason(list(result.values())) is None


def test_the_overall_agreement_gate_is_kept_as_an_option():
    result = gates(GateConfig(min_agreement=0.7), agreement=0.6, coverage=0.24)
    assert not result["agreement"].passed
    assert failed_reason(list(result.values())) == "agreement 0.600 < 0.700"


def test_coverage_must_be_above_zero_by_default_or_reach_min_coverage():
    assert not gates(coverage=0.0, candidate_served=Served(0.0, 0, 0))["coverage"].passed
    assert gates(coverage=0.01)["coverage"].passed
    assert not gates(GateConfig(min_coverage=0.3), coverage=0.24)["coverage"].passed


def test_a_candidate_serving_more_at_the_certified_quality_beats_the_champion():
    # Found: run 2 "rejected on non-inferiority -0.029 while its coverage was 0.60" (the
    # champion's was 0.185): overall agreement was compared, not what each would serve.
    result = gates(
        GateConfig(quality_target=0.8),
        agreement=0.62,
        coverage=0.6,
        candidate_served=Served(0.6, 60, 52),
        champion_served=Served(0.185, 18, 17),
    )
    assert result["non_inferiority"].passed
    assert result["non_inferiority"].value == pytest.approx(0.415)
    assert "serves 0.600" in result["non_inferiority"].detail


def test_a_candidate_that_serves_less_or_worse_than_the_champion_is_rejected():
    less = gates(
        coverage=0.2, candidate_served=Served(0.2, 20, 20), champion_served=Served(0.4, 40, 38)
    )
    assert not less["non_inferiority"].passed
    assert "non_inferiority -0.200 < -0.020" in failed_reason(list(less.values()))
    # Serves as much, but agrees far less than the target on what it serves.
    worse = gates(
        coverage=0.4, candidate_served=Served(0.4, 40, 28), champion_served=Served(0.4, 40, 38)
    )
    assert not worse["non_inferiority"].passed
    assert "non_inferiority: served traffic" in failed_reason(list(worse.values()))


def test_each_gate_can_fail_and_the_reason_names_it():
    config = GateConfig(min_agreement=0.95, min_coverage=0.6, min_validity=0.99)
    result = gates(
        config,
        validity=0.9,
        golden=[True, False],
        candidate_served=Served(0.5, 50, 40),
        champion_served=Served(0.8, 80, 79),
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


def _eval(confident_right: int, unsure: int) -> ModelEval:
    """Confident answers that agree, then unsure ones that do not."""
    feats = [extract_features([-0.01], text="a").to_dict()] * confident_right
    feats += [extract_features([-3.0], text="b").to_dict()] * unsure
    agreed = [True] * confident_right + [False] * unsure
    return ModelEval(
        agreed=agreed, valid=[True] * len(agreed), features=feats, answers=[""] * len(agreed)
    )


def test_a_threshold_needs_enough_calibration_examples_and_records_its_bound():
    config = GateConfig(quality_target=0.8)
    fitted = calibrate(_eval(70, 50), "label", config)
    assert fitted.coverage == pytest.approx(70 / 120) and fitted.note is None
    assert fitted.router.threshold.agreement_lower_bound >= 0.8
    assert fitted.served == Served(pytest.approx(70 / 120), 70, 70)
    few = calibrate(_eval(35, 25), "label", config)
    assert few.coverage == 0 and few.router.threshold.serves_nothing
    assert "60 held-out examples < min_calibration_examples 100" in few.note


def test_a_run_that_certifies_nothing_says_how_close_its_surest_answers_came():
    # Found: a run on a new task's first few hundred answers said only "coverage 0.000:
    # nothing served at the quality target", whether it lacked answers or its surest ones
    # disagreed too often.
    ev = _eval(60, 45)
    ev.agreed = [True] * 50 + [False] * 55  # 10 of the 60 sure answers disagree
    config = GateConfig(quality_target=0.8)
    fitted = calibrate(ev, "label", config, ranked_by_probability=True)
    assert fitted.coverage == 0 and fitted.router.threshold.serves_nothing
    assert fitted.note is not None and fitted.note.startswith(
        "no threshold certified on 105 held-out answers: at best, the 60 the student is "
        "surest of agree 0.833, lower bound 0."
    )
    assert "< 0.8 at confidence 0.99" in fitted.note
    result = evaluate_gates(
        config,
        agreement=0.48,
        coverage=fitted.coverage,
        validity=1.0,
        golden=[],
        candidate_served=fitted.served,
        coverage_note=fitted.note,
    )
    assert failed_reason(result) == f"coverage 0.000: {fitted.note}"
    # At 0.97, no threshold on 120 answers could be tested: even 120 of 120 bound lower.
    strict = calibrate(
        _eval(70, 50), "label", GateConfig(quality_target=0.97), ranked_by_probability=True
    )
    assert strict.note == (
        "no threshold certified on 120 held-out answers: too few for a lower bound of 0.97 at "
        "confidence 0.99 even if every one agreed"
    )
    without_note = gates(coverage=0.0, candidate_served=Served(0.0, 0, 0))
    assert failed_reason(list(without_note.values())) == (
        "coverage 0.000: nothing served at quality target 0.97"
    )


def test_the_champion_is_judged_on_the_same_examples_under_its_own_router():
    config = GateConfig(quality_target=0.8)
    ev = _eval(70, 50)
    stored = calibrate(ev, "label", config).router.to_dict()
    served = champion_served(stored, ev.features, ev.agreed)
    assert (served.n, served.agreed) == (70, 70)


def test_shadow_checks_weigh_less_than_audits_in_calibration():
    # The confident answers the champion served are over-represented by shadow checks: 120
    # agreeing ones drawn as shadow checks (weight 0.25) and 80 audits of which 24 disagree.
    # Unweighted, 88% of what it serves agrees; weighted, (30 + 56) / (30 + 80) = 0.78 < 0.8.
    # (At 95%: the 160 certifying answers of the sure kind bound 0.88 above 0.8 unweighted.)
    feats = [extract_features([-0.01], text="a").to_dict()] * 200
    feats += [extract_features([-3.0], text="b").to_dict()] * 200
    agreed = [True] * 120 + [True] * 56 + [False] * 24 + [False] * 200
    weights = [0.25] * 120 + [1.0] * 280
    order = [i for k in range(5) for i in range(k, 400, 5)]  # both parts get every kind
    ev = ModelEval(
        agreed=[agreed[i] for i in order],
        valid=[True] * 400,
        features=[feats[i] for i in order],
        answers=[""] * 400,
        weights=[weights[i] for i in order],
    )
    config = GateConfig(quality_target=0.8, bound="wilson", confidence=0.95)
    assert calibrate(ev, "label", config).router.threshold.serves_nothing
    ev.weights = []
    fitted = calibrate(ev, "label", config)
    assert not fitted.router.threshold.serves_nothing
    assert fitted.served.agreement == pytest.approx(0.88)


def test_the_champion_is_compared_only_on_examples_it_never_trained_on():
    window = {"train_from": 0.0, "train_to": 50.0, "eval_from": 30.0, "eval_to": 50.0}
    assert unseen_by(window, [10.0, 29.9, 30.0, 45.0, 80.0]) == [False, False, True, True, True]
    assert unseen_by({}, [1.0, 2.0]) == [True, True]
    ev = _eval(70, 50)
    stored = calibrate(ev, "label", GateConfig(quality_target=0.8)).router.to_dict()
    keep = [i % 2 == 0 for i in range(120)]
    served = champion_served(stored, ev.features, ev.agreed, keep=keep)
    assert (served.n, served.agreed) == (35, 35) and served.coverage == pytest.approx(35 / 60)


def test_a_classical_candidate_is_certified_on_every_held_out_example():
    # 55 sure answers that agree and 50 unsure that do not. With a policy fitted on a fifth of
    # them, the 84 left hold 44 sure ones: fewer than the 50 a threshold must serve to be
    # tested, so nothing was certified. A one-label answer's probability ranks it without a
    # fit, and all 105 certify.
    config = GateConfig(quality_target=0.8)
    assert calibrate(_eval(55, 50), "label", config).router.threshold.serves_nothing
    fitted = calibrate(_eval(55, 50), "label", config, ranked_by_probability=True)
    threshold = fitted.router.threshold
    assert (threshold.n_calibration, threshold.n_served) == (105, 55)
    assert fitted.coverage == pytest.approx(55 / 105) and fitted.note is None
    assert threshold.agreement_lower_bound >= 0.8


def test_a_classical_candidates_order_does_not_depend_on_the_labels():
    ev = _eval(55, 50)
    probabilities = [math.exp(f["mean_token_logprob"]) for f in ev.features]
    for agreed in (ev.agreed, [not a for a in ev.agreed]):
        ev.agreed = agreed
        policy = calibrate(ev, "label", GateConfig(), ranked_by_probability=True).router.policy
        scores = policy.scores(ev.features)
        ranked = sorted(range(105), key=lambda i: (-scores[i], i))
        assert ranked == sorted(range(105), key=lambda i: (-probabilities[i], i))
