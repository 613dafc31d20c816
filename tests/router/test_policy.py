import json
import math
import random

import numpy as np
import pytest

from understudy.router import (
    FEATURE_NAMES,
    POLICIES,
    CalibratedPolicy,
    Features,
    MeanProbabilityPolicy,
    extract_features,
    load_policy,
)
from understudy.router.bench import synthetic_answers


def confident_correct_unsure_wrong(n, seed=0):
    """Agreeing answers have high token probabilities, disagreeing ones low (some overlap)."""
    rng = random.Random(seed)
    features, labels = [], []
    for i in range(n):
        agreed = i % 3 != 0
        centre = -0.05 if agreed else -1.2
        logprobs = [min(0.0, rng.gauss(centre, 0.4)) for _ in range(rng.randint(2, 8))]
        second = logprobs[0] - (3.0 if agreed else 0.3) * rng.random()
        features.append(extract_features(logprobs, [logprobs[0], second], text="x"))
        labels.append(agreed)
    return features, labels


def auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def test_confident_correct_and_unsure_wrong_separate():
    features, labels = confident_correct_unsure_wrong(300)
    policy = CalibratedPolicy.fit(features, labels)
    assert policy.method == "logistic_isotonic"
    test_f, test_y = confident_correct_unsure_wrong(300, seed=1)
    scores = policy.scores(test_f)
    assert auroc(scores, test_y) > 0.95
    agreed = [s for s, y in zip(scores, test_y, strict=True) if y]
    disagreed = [s for s, y in zip(scores, test_y, strict=True) if not y]
    assert np.mean(agreed) > 0.85 and np.mean(disagreed) < 0.25
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_scores_are_calibrated_on_fresh_data():
    features, labels = synthetic_answers(2000, seed=1)
    policy = CalibratedPolicy.fit(features, labels)
    test_f, test_y = synthetic_answers(3000, seed=2)
    scores = np.array(policy.scores(test_f))
    agreed = np.array(test_y)
    assert abs(scores.mean() - agreed.mean()) < 0.03
    for lo, hi in [(0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01)]:
        band = (scores >= lo) & (scores < hi)
        assert band.sum() > 100
        assert abs(scores[band].mean() - agreed[band].mean()) < 0.06, (lo, hi)


def test_hand_evaluated_logistic_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    features, labels = synthetic_answers(60, seed=3)
    policy = CalibratedPolicy.fit(features, labels)
    assert policy.method == "logistic"
    x = np.array([f.as_vector() for f in features])
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    expected = LogisticRegression(C=1.0, max_iter=1000).fit(z, labels).predict_proba(z)[:, 1]
    assert policy.scores(features) == pytest.approx(expected.tolist(), abs=1e-6)


def test_isotonic_map_is_applied_as_stored():
    features, labels = synthetic_answers(500, seed=4)
    policy = CalibratedPolicy.fit(features, labels)
    assert policy.method == "logistic_isotonic"
    assert list(policy.isotonic_x) == sorted(policy.isotonic_x)
    assert list(policy.isotonic_y) == sorted(policy.isotonic_y)
    assert 0 < policy.blend < 0.1
    for f in features[:50]:
        p = 1 / (1 + math.exp(-policy.logit(f)))
        calibrated = float(np.interp(p, policy.isotonic_x, policy.isotonic_y))
        assert policy.score(f) == pytest.approx((1 - policy.blend) * calibrated + policy.blend * p)


def test_a_policy_stored_without_blend_scores_as_before():
    features, labels = synthetic_answers(500, seed=4)
    stored = CalibratedPolicy.fit(features, labels).to_dict()
    del stored["blend"]
    policy = CalibratedPolicy.from_dict(stored)
    for f in features[:20]:
        p = 1 / (1 + math.exp(-policy.logit(f)))
        assert policy.score(f) == pytest.approx(
            float(np.interp(p, policy.isotonic_x, policy.isotonic_y))
        )


def test_confident_answers_keep_distinct_confidences():
    """The isotonic step function gave every answer of a block, often all the confident ones,
    one confidence: a threshold could not serve some of them and not the others."""
    features, labels = synthetic_answers(300, seed=1)
    policy = CalibratedPolicy.fit(features, labels)
    test_f, _ = synthetic_answers(300, seed=2)
    logistic = [1 / (1 + math.exp(-policy.logit(f))) for f in test_f]
    top = sorted(range(300), key=logistic.__getitem__)[-100:]
    scores = policy.scores([test_f[i] for i in top])
    assert len({round(s, 4) for s in scores}) >= 90
    ranked = [policy.score(test_f[i]) for i in sorted(top, key=logistic.__getitem__)]
    assert ranked == sorted(ranked)  # the logistic ranking is kept


def test_a_higher_target_trades_coverage_inside_the_confident_answers():
    from understudy.router import choose_threshold

    features, labels = synthetic_answers(3000, seed=5)
    policy = CalibratedPolicy.fit(features[:1000], labels[:1000])
    scores, held = policy.scores(features[1000:]), labels[1000:]
    coverages = [
        choose_threshold(scores, held, target, 0.95).expected_coverage
        for target in (0.85, 0.9, 0.93)
    ]
    assert coverages[0] > coverages[1] > coverages[2] > 0
    for target in (0.85, 0.9, 0.93):  # the bound still holds on what is served
        choice = choose_threshold(scores, held, target, 0.95)
        served = [y for s, y in zip(scores, held, strict=True) if s >= choice.threshold]
        assert sum(served) / len(served) >= target


@pytest.mark.parametrize(
    ("labels", "prior"),
    [
        ([True] * 50, 51 / 52),
        ([False] * 50, 1 / 52),
        ([True, False, True], 3 / 5),
        ([True] * 49 + [False], 50 / 52),  # a single disagreement is too few to fit
        ([], 1 / 2),
    ],
)
def test_degenerate_data_falls_back_to_the_prior(labels, prior):
    features, _ = synthetic_answers(len(labels), seed=5)
    policy = CalibratedPolicy.fit(features, labels)
    assert policy.method == "prior"
    assert policy.prior == pytest.approx(prior)
    sure = extract_features([-0.001] * 3, text="x")
    unsure = extract_features([-2.0] * 3, text="x")
    assert policy.score(sure) == pytest.approx(prior * math.exp(-0.001))
    assert policy.score(unsure) < policy.score(sure) <= prior
    assert policy.score(extract_features([], text="")) == 0.0


def test_constant_feature_columns_do_not_break_fitting():
    features = [extract_features([-0.1 * (i % 7)] * 4, text="x") for i in range(40)]
    labels = [i % 7 < 4 for i in range(40)]
    policy = CalibratedPolicy.fit(features, labels)
    assert policy.method == "logistic"
    assert all(math.isfinite(s) for s in policy.scores(features))
    assert policy.score(features[0]) > policy.score(features[6])


def test_fit_accepts_feature_dicts_as_stored():
    features, labels = synthetic_answers(80, seed=6)
    dicts = [json.loads(json.dumps(f.to_dict())) for f in features]
    assert CalibratedPolicy.fit(dicts, labels) == CalibratedPolicy.fit(features, labels)
    policy = CalibratedPolicy.fit(dicts, labels)
    assert policy.scores(dicts) == policy.scores(features)


def test_fit_rejects_mismatched_lengths():
    features, _ = synthetic_answers(20)
    with pytest.raises(ValueError, match="labels"):
        CalibratedPolicy.fit(features, [True] * 19)


@pytest.mark.parametrize("n", [0, 3, 60, 400])
def test_round_trip_through_plain_json(n):
    features, labels = synthetic_answers(n, seed=7)
    policy = CalibratedPolicy.fit(features, labels) if n else CalibratedPolicy.fit([], [])
    text = json.dumps(policy.to_dict(), allow_nan=False)
    again = CalibratedPolicy.from_dict(json.loads(text))
    assert again == policy
    probe, _ = synthetic_answers(20, seed=8)
    assert again.scores(probe) == policy.scores(probe)
    assert load_policy(json.loads(text)) == policy


def test_from_dict_refuses_a_policy_fitted_on_other_features():
    data = CalibratedPolicy.fit(*synthetic_answers(60)).to_dict()
    data["features"] = list(reversed(FEATURE_NAMES))
    with pytest.raises(ValueError, match="features"):
        CalibratedPolicy.from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "forest"}, "unknown method"),
        ({"method": "logistic", "mean": (0.0,), "scale": (1.0,), "coef": (1.0,)}, "6 values"),
        (
            {"method": "logistic", "mean": (0.0,) * 6, "scale": (0.0,) * 6, "coef": (1.0,) * 6},
            "positive",
        ),
        ({"method": "prior", "isotonic_x": (0.1,)}, "length"),
        (
            {
                "method": "logistic_isotonic",
                "mean": (0.0,) * 6,
                "scale": (1.0,) * 6,
                "coef": (1.0,) * 6,
            },
            "breakpoints",
        ),
    ],
)
def test_invalid_policies_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CalibratedPolicy(**kwargs)


def test_mean_probability_policy():
    policy = MeanProbabilityPolicy()
    f = extract_features([math.log(0.9), math.log(0.4)], text="x")
    assert policy.score(f) == pytest.approx(math.sqrt(0.9 * 0.4))
    assert policy.score(Features(0.0, 0.0, 0.0, 0.0, 0.0, 0)) == 0.0
    assert isinstance(load_policy(policy.to_dict()), MeanProbabilityPolicy)


def test_registry_knows_both_policies_and_rejects_unknown_names():
    assert POLICIES["calibrated"] is CalibratedPolicy
    assert POLICIES["mean_probability"] is MeanProbabilityPolicy
    with pytest.raises(ValueError, match="unknown policy"):
        load_policy({"name": "oracle"})


def test_a_label_the_teacher_often_answers_otherwise_needs_a_surer_student():
    # The rate of the answer's label (how often the teacher agreed with it, measured on other
    # examples) times the first-token margin: the same margin ranks a reliable label first.
    policy = CalibratedPolicy(
        method="prior",
        prior=0.7,
        label_rates=(("card_arrival", 0.95), ("pending_transfer", 0.40)),
        label_default=0.6,
    )
    reliable = extract_features([math.log(0.8)], [math.log(0.8), math.log(0.1)], "card_arrival")
    unreliable = extract_features(
        [math.log(0.8)], [math.log(0.8), math.log(0.1)], "pending_transfer"
    )
    unseen = extract_features([math.log(0.8)], [math.log(0.8), math.log(0.1)], "new_label")
    assert policy.score(reliable) == pytest.approx(0.95 * 0.7)
    assert policy.score(unreliable) == pytest.approx(0.40 * 0.7)
    assert policy.score(unseen) == pytest.approx(0.6 * 0.7)
    surer = extract_features(
        [math.log(0.99)], [math.log(0.99), math.log(0.005)], "pending_transfer"
    )
    assert policy.score(surer) < policy.score(reliable)

    stored = json.loads(json.dumps(policy.to_dict()))
    assert load_policy(stored) == policy
    assert load_policy(stored).score(unreliable) == policy.score(unreliable)


def test_a_policy_without_label_rates_scores_as_before_and_stores_no_rates():
    policy = CalibratedPolicy(method="prior", prior=0.7)
    f = extract_features([math.log(0.8)], [math.log(0.8), math.log(0.1)], "card_arrival")
    assert policy.score(f) == pytest.approx(0.7 * 0.8)
    assert "label_rates" not in policy.to_dict()
    with pytest.raises(ValueError, match="label rates"):
        CalibratedPolicy(method="prior", label_rates=(("a", 1.5),))


def test_an_answer_is_scored_with_the_label_rates_of_its_requests_fold():
    # Rates measured per fold of the requests' texts, each on the held-out answers of the
    # other folds: a request is scored with its own fold's, as its held-out twins were.
    policy = CalibratedPolicy(
        method="prior",
        prior=0.7,
        label_rates=(("card_arrival", 0.95),),
        label_default=0.6,
        fold_rates=((("card_arrival", 0.5),), (("card_arrival", 0.9),)),
        fold_defaults=(0.3, 0.8),
    )
    alternatives = [math.log(0.8), math.log(0.1)]
    in_fold = [
        extract_features([math.log(0.8)], alternatives, "card_arrival", fold=k) for k in (0, 1)
    ]
    assert policy.score(in_fold[0]) == pytest.approx(0.5 * 0.7)
    assert policy.score(in_fold[1]) == pytest.approx(0.9 * 0.7)
    other = extract_features([math.log(0.8)], alternatives, "new_label", fold=0)
    assert policy.score(other) == pytest.approx(0.3 * 0.7)
    no_fold = extract_features([math.log(0.8)], alternatives, "card_arrival")
    assert policy.score(no_fold) == pytest.approx(0.95 * 0.7)  # the training rates

    stored = json.loads(json.dumps(policy.to_dict()))
    assert load_policy(stored) == policy
    assert Features.from_dict(in_fold[1].to_dict()).fold == 1
    with pytest.raises(ValueError, match="differ in length"):
        CalibratedPolicy(method="prior", fold_rates=((("a", 0.5),),))
