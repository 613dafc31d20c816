import json
import math

import pytest

from understudy.router import (
    ThresholdChoice,
    certify_threshold,
    choose_threshold,
    lower_bound,
    nearest_miss,
    sequence_starts,
    threshold_stats,
)

Z2 = 1.6448536269514722**2  # one-sided 95% normal quantile, squared


def test_wilson_lower_bound_by_hand():
    # k == n: the Wilson bound simplifies to n / (n + z^2).
    assert lower_bound(3, 3) == pytest.approx(3 / (3 + Z2))
    assert lower_bound(200, 200) == pytest.approx(200 / (200 + Z2))
    # 3 of 4: (p + z2/2n - z sqrt(p(1-p)/n + z2/4n^2)) / (1 + z2/n), worked out on paper.
    assert lower_bound(3, 4) == pytest.approx(0.356168, abs=1e-6)
    assert lower_bound(0, 5) == 0.0
    assert lower_bound(0, 0) == 0.0


def test_clopper_pearson_lower_bound_by_hand():
    # k == n: P(X = n) = p^n = alpha, so the bound is alpha^(1/n).
    assert lower_bound(10, 10, 0.95, "clopper_pearson") == pytest.approx(0.05**0.1)
    assert lower_bound(5, 5, 0.9, "clopper_pearson") == pytest.approx(0.1**0.2)
    assert lower_bound(0, 10, 0.95, "clopper_pearson") == 0.0


def test_higher_confidence_gives_a_lower_bound():
    assert lower_bound(90, 100, 0.99) < lower_bound(90, 100, 0.95) < lower_bound(90, 100, 0.8) < 0.9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5, 4), "agreed"),
        ((-1, 4), "agreed"),
        ((1, 2, 1.0), "confidence"),
        ((1, 2, 0.9, "t"), "bound"),
    ],
)
def test_lower_bound_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        lower_bound(*args)


def test_small_case_by_hand():
    # Served sets: {0.9}: 1/1, lb .270; {0.9,0.8}: 2/2, lb .425; {..0.7}: 3/3, lb .526;
    # {..0.6}: 3/4, lb .356. Target 0.5: the widest set meeting it is the top three.
    choice = choose_threshold([0.6, 0.9, 0.7, 0.8], [False, True, True, True], 0.5)
    assert choice.threshold == 0.7
    assert choice.expected_coverage == 0.75
    assert choice.expected_agreement == 1.0
    assert choice.agreement_lower_bound == pytest.approx(3 / (3 + Z2))
    assert choice.n_calibration == 4
    assert (choice.quality_target, choice.confidence, choice.bound) == (0.5, 0.95, "wilson")
    assert not choice.serves_nothing


def test_bound_not_point_estimate_decides():
    # 200 answers scored 0.9 all agree; 100 scored 0.5 hold 6 disagreements. Serving all 300
    # gives a point estimate of 0.98 >= 0.97, but its lower bound (0.962) misses the target;
    # the 0.9 group alone has a bound of 0.987, so the stricter threshold is chosen.
    scores = [0.9] * 200 + [0.5] * 100
    labels = [True] * 200 + [False] * 6 + [True] * 94
    everything = threshold_stats(scores, labels, 0.5, 0.97)
    assert everything.expected_coverage == 1.0
    assert everything.expected_agreement == pytest.approx(0.98)
    assert everything.agreement_lower_bound == pytest.approx(0.9618, abs=1e-4)
    choice = choose_threshold(scores, labels, 0.97)
    assert choice.threshold == 0.9
    assert choice.expected_coverage == pytest.approx(200 / 300)
    assert choice.expected_agreement == 1.0
    assert choice.agreement_lower_bound == pytest.approx(200 / (200 + Z2))


def test_larger_samples_allow_more_coverage_at_the_same_rate():
    small = choose_threshold([0.9] * 50, [True] * 50, 0.95)
    large = choose_threshold([0.9] * 500, [True] * 500, 0.95)
    assert small.serves_nothing  # 50/50 has a 95% lower bound of 0.949
    assert large.expected_coverage == 1.0 and large.threshold == 0.9


def test_ties_are_served_or_deferred_together():
    choice = choose_threshold([0.9] * 100 + [0.5] * 100, [True] * 100 + [True, False] * 50, 0.9)
    assert choice.threshold == 0.9 and choice.expected_coverage == 0.5


def test_clopper_pearson_choice():
    scores = [0.9] * 10 + [0.5]
    assert choose_threshold(scores, [True] * 11, 0.74, bound="clopper_pearson").threshold == 0.5
    choice = choose_threshold(scores, [True] * 10 + [False], 0.74, bound="clopper_pearson")
    assert choice.threshold == 0.9 and choice.bound == "clopper_pearson"
    assert choose_threshold(
        scores, [True] * 10 + [False], 0.75, bound="clopper_pearson"
    ).serves_nothing


@pytest.mark.parametrize(
    ("scores", "labels"),
    [([0.9, 0.8, 0.1], [False, False, False]), ([], []), ([0.99] * 5, [True] * 5)],
)
def test_unreachable_target_serves_nothing(scores, labels):
    choice = choose_threshold(scores, labels, 0.9)
    assert choice.serves_nothing and math.isinf(choice.threshold)
    assert choice.expected_coverage == 0.0
    assert choice.expected_agreement is None and choice.agreement_lower_bound is None
    assert choice.n_calibration == len(scores)


def test_target_of_one_is_never_met_under_a_bound():
    assert choose_threshold([0.9] * 10_000, [True] * 10_000, 1.0).serves_nothing


def test_threshold_stats_for_a_fixed_threshold():
    stats = threshold_stats([0.95, 0.9, 0.85, 0.3], [True, True, False, False], 0.85, 0.97)
    assert stats.threshold == 0.85
    assert stats.expected_coverage == 0.75
    assert stats.expected_agreement == pytest.approx(2 / 3)
    assert stats.agreement_lower_bound == pytest.approx(lower_bound(2, 3))
    none = threshold_stats([0.5], [True], 0.9, 0.97)
    assert none.expected_coverage == 0.0 and none.expected_agreement is None
    assert threshold_stats([], [], 0.9, 0.97).expected_coverage == 0.0


@pytest.mark.parametrize(
    ("scores", "labels", "target", "confidence", "bound", "message"),
    [
        ([0.5], [], 0.9, 0.95, "wilson", "labels"),
        ([math.nan], [True], 0.9, 0.95, "wilson", "NaN"),
        ([0.5], [True], 0.0, 0.95, "wilson", "quality_target"),
        ([0.5], [True], 1.2, 0.95, "wilson", "quality_target"),
        ([0.5], [True], 0.9, 1.0, "wilson", "confidence"),
        ([0.5], [True], 0.9, 0.95, "hoeffding", "bound"),
    ],
)
def test_bad_inputs_are_rejected(scores, labels, target, confidence, bound, message):
    with pytest.raises(ValueError, match=message):
        choose_threshold(scores, labels, target, confidence, bound)


@pytest.mark.parametrize("labels", [[True, True, True, False], [False] * 4])
def test_choice_round_trips_through_strict_json(labels):
    choice = choose_threshold([0.6, 0.9, 0.7, 0.8], labels, 0.5)
    text = json.dumps(choice.to_dict(), allow_nan=False)
    assert ThresholdChoice.from_dict(json.loads(text)) == choice


def test_certification_tests_thresholds_in_a_fixed_sequence_and_stops_at_the_first_failure():
    # Highest scores first: 140 agree, then 10 that disagree, then 100 that all agree.
    # Scanning keeps the widest threshold whose bound passes (all 250: 240/250); tested in
    # sequence (one: 250 answers are under twice min_served), the group of 10 fails first
    # and the widest certified threshold is the top 140.
    scores = [0.9] * 140 + [0.5] * 10 + [0.3] * 100
    labels = [True] * 140 + [False] * 10 + [True] * 100
    assert choose_threshold(scores, labels, 0.9).threshold == 0.3
    choice = certify_threshold(scores, labels, 0.9, bound="wilson", min_served=130)
    assert choice.threshold == 0.9 and choice.n_served == 140 and choice.sequences == 1
    assert choice.method == "fixed_sequence" and choice.min_served == 130
    assert choice.agreement_lower_bound == pytest.approx(lower_bound(140, 140))


def test_a_few_disagreements_among_the_surest_answers_do_not_stop_every_sequence():
    # A run's 512 held-out answers: 45 of the surest 50 agreed, 226 of the surest 250. One
    # sequence from the first 50 stops there (their 99% bound is 0.76) and serves nothing.
    # Sequences from 50, 100, 200 and 400 answers, each at 1 - 0.01 / 4: the one from 200
    # certifies the widest threshold.
    labels = [i % 10 != 0 for i in range(50)] + [i % 10 != 0 for i in range(450)]
    labels[50:100] = [True] * 46 + [False] * 4
    scores = [1.0 - i / 1000 for i in range(500)]
    assert lower_bound(45, 50, 0.99, "clopper_pearson") < 0.8
    choice = certify_threshold(scores, labels, 0.8, 0.99, min_served=50)
    assert choice.sequences == 4
    assert choice.n_served is not None and choice.n_served >= 400
    assert choice.agreement_lower_bound >= 0.8
    k = sum(labels[: choice.n_served])
    level = 1 - 0.01 / 4
    assert choice.agreement_lower_bound == pytest.approx(
        lower_bound(k, choice.n_served, level, "clopper_pearson")
    )
    assert sequence_starts(50, 512) == [50, 100, 200, 400] and sequence_starts(50, 99) == [50]


def test_certified_thresholds_keep_their_promise_over_many_draws():
    # Answers whose chance to agree rises with the score: a threshold's true agreement is
    # known. Over 300 calibration sets of 300, how often is a threshold certified whose true
    # served agreement is below 0.8? At most 1% by construction; 6 in 300 would be 2%.
    import random

    rng = random.Random(7)
    misses = certified = 0
    for _ in range(300):
        scores = [rng.random() for _ in range(300)]
        labels = [rng.random() < 0.55 + 0.45 * s for s in scores]
        choice = certify_threshold(scores, labels, 0.8, 0.99, "wilson", min_served=50)
        if choice.serves_nothing:
            continue
        certified += 1
        t = choice.threshold  # agreement of scores >= t: mean of 0.55 + 0.45 s over [t, 1]
        misses += 0.55 + 0.45 * (1 + t) / 2 < 0.8
    assert certified > 200 and misses <= 6


def test_certification_needs_min_served_examples():
    # 25 of 25 agree: a Wilson bound of 0.90 meets 0.8, but 25 answers are too few to test.
    assert not choose_threshold(
        [0.9] * 25 + [0.1] * 75, [True] * 25 + [False] * 75, 0.8
    ).serves_nothing
    few = certify_threshold([0.9] * 25 + [0.1] * 75, [True] * 25 + [False] * 75, 0.8)
    assert few.serves_nothing and few.method == "fixed_sequence" and few.n_served is None
    enough = certify_threshold([0.9] * 30 + [0.1] * 70, [True] * 30 + [False] * 70, 0.8)
    assert enough.threshold == 0.9 and enough.n_served == 30
    assert enough.bound == "clopper_pearson"
    # Two sequences (from 30 and 60 served), each at 1 - 0.05 / 2.
    assert enough.sequences == 2
    assert enough.agreement_lower_bound == pytest.approx(0.025 ** (1 / 30))


def test_certification_weighs_examples_on_their_effective_sample_size():
    # 40 agreeing answers, 20 weighing 1 and 20 weighing 0.25, and 10 disagreeing ones of
    # weight 1: the weighted agreement is 25 / 35 and the bound is on (sum w)^2 / sum w^2.
    scores = [0.9] * 40 + [0.9] * 10 + [0.1] * 50
    labels = [True] * 40 + [False] * 10 + [False] * 50
    weights = [1.0] * 20 + [0.25] * 20 + [1.0] * 10 + [1.0] * 50
    choice = certify_threshold(scores, labels, 0.5, bound="wilson", weights=weights)
    n_eff = 35**2 / (20 + 20 * 0.0625 + 10)
    assert choice.expected_agreement == pytest.approx(25 / 35)
    assert choice.agreement_lower_bound == pytest.approx(
        lower_bound(n_eff * 25 / 35, n_eff, 1 - 0.05 / choice.sequences)
    )
    assert choice.expected_coverage == pytest.approx(35 / 85) and choice.n_served == 50
    with pytest.raises(ValueError, match="weights"):
        certify_threshold([0.9], [True], 0.5, weights=[0.0])


def test_the_certificate_round_trips_with_its_bound():
    choice = certify_threshold([0.9] * 40, [True] * 40, 0.8)
    again = ThresholdChoice.from_dict(json.loads(json.dumps(choice.to_dict())))
    assert again == choice and again.to_dict()["n_served"] == 40
    old = {
        k: v for k, v in choice.to_dict().items() if k not in ("n_served", "method", "min_served")
    }
    assert ThresholdChoice.from_dict(old).method == "scan"


def test_certification_starts_where_a_perfect_record_could_meet_the_target():
    # 50 of 50 agreeing have an exact 95% bound of 0.942: testing there would stop the
    # sequence at once for a target of 0.97; the first threshold tested serves enough (99).
    scores = [1.0 - i / 1000 for i in range(200)] + [0.1] * 100
    labels = [True] * 200 + [False] * 100
    choice = certify_threshold(scores, labels, 0.97, 0.95, min_served=50)
    assert choice.threshold == pytest.approx(0.801) and choice.n_served == 200
    assert choice.agreement_lower_bound == pytest.approx((0.05 / 3) ** (1 / 200))


def test_when_nothing_is_certified_the_nearest_miss_is_the_best_first_test_of_a_sequence():
    # 100 answers, highest score first: 34 of the first 40 agree, the rest mostly do not.
    scores = [100.0 - i for i in range(100)]
    labels = [i % 7 != 3 for i in range(40)] + [i % 3 == 0 for i in range(60)]
    assert certify_threshold(scores, labels, 0.9, 0.95, min_served=30).serves_nothing

    miss = nearest_miss(scores, labels, 0.9, 0.95, min_served=30)
    starts = sequence_starts(30, 100)
    level = 1 - 0.05 / len(starts)

    def bound(n):
        return lower_bound(sum(labels[:n]), n, level, "clopper_pearson")

    # Each sequence's first test: the first threshold from its start whose bound could reach
    # the target if every answer it serves agreed.
    firsts = [
        next(n for n in range(s, 101) if lower_bound(n, n, level, "clopper_pearson") >= 0.9)
        for s in starts
    ]
    best = max(firsts, key=bound)
    assert miss is not None and miss.method == "nearest_miss"
    assert miss.n_served == best and miss.threshold == scores[best - 1]
    assert miss.agreement_lower_bound == pytest.approx(bound(best))
    assert bound(best) < 0.9
    assert miss.expected_agreement == pytest.approx(sum(labels[:best]) / best)
    assert miss.confidence == pytest.approx(level)
    # A threshold no sequence reached is not reported, however high its bound. Found: a
    # run's note read "at best, the 65 the student is surest of agree 0.938, lower bound
    # 0.811 < 0.8": the one sequence had stopped at 50.
    late = [i % 2 == 0 or i < 8 for i in range(30)] + [True] * 20
    assert certify_threshold(scores[:50], late, 0.6, 0.95, min_served=30).serves_nothing
    assert lower_bound(sum(late), 50, 0.95, "clopper_pearson") >= 0.6  # never tested
    stopped = nearest_miss(scores[:50], late, 0.6, 0.95, min_served=30)
    assert stopped is not None and stopped.n_served == 30
    assert stopped.agreement_lower_bound is not None and stopped.agreement_lower_bound < 0.6
    # Too few answers for any bound to reach the target: nothing was tested.
    assert nearest_miss(scores[:20], labels[:20], 0.9, 0.95, min_served=10) is None
