import math

import pytest

from understudy.router import FEATURE_NAMES, Features, extract_features, first_token_margin

LN = math.log


def test_sequence_and_token_probability_features():
    f = extract_features([LN(0.5), LN(0.25), LN(1.0)], text="refund")
    assert f.sequence_logprob == pytest.approx(LN(0.125))
    assert f.mean_token_logprob == pytest.approx(LN(0.125) / 3)
    assert f.mean_token_prob == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert f.min_token_prob == pytest.approx(0.25)
    assert f.length_tokens == 3
    assert f.valid and f.failed_check is None


def test_first_token_margin_from_alternatives_in_any_order():
    alternatives = [LN(0.1), LN(0.5), LN(0.3)]
    f = extract_features([LN(0.5)], alternatives, text="x")
    assert f.first_token_margin == pytest.approx(0.5 - 0.3)


@pytest.mark.parametrize(
    ("alternatives", "first", "expected"),
    [
        ([LN(0.8)], [], 0.6),  # second best is at most 0.2
        ([], [LN(0.9)], 0.8),  # chosen first token stands for the top one
        ([], [LN(0.4)], 0.0),  # could be a near tie: no margin claimed
        ([], [], 0.0),
        ([LN(0.3), LN(0.3)], [], 0.0),
    ],
)
def test_first_token_margin_fallbacks(alternatives, first, expected):
    assert first_token_margin(alternatives, first) == pytest.approx(expected)


def test_extract_uses_the_first_token_when_no_alternatives():
    f = extract_features([LN(0.9), LN(0.2)], [], text="x")
    assert f.first_token_margin == pytest.approx(0.8)


def test_non_finite_and_out_of_range_logprobs_are_clamped():
    f = extract_features([-math.inf, math.nan, -9999.0, 0.1], text="x")
    assert f.sequence_logprob == pytest.approx(-300.0)
    assert f.min_token_prob == pytest.approx(math.exp(-100.0))
    assert all(math.isfinite(v) for v in f.as_vector())
    assert extract_features([0.5], text="x").sequence_logprob == 0.0


def test_no_tokens_means_no_confidence():
    f = extract_features([], [], text="")
    assert f.as_vector() == (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert f.failed_check == "empty"


def test_vector_order_matches_feature_names():
    f = Features(-1.0, -0.5, 0.6, 0.3, 0.2, 2)
    assert dict(zip(FEATURE_NAMES, f.as_vector(), strict=True)) == {
        "sequence_logprob": -1.0,
        "mean_token_logprob": -0.5,
        "mean_token_prob": 0.6,
        "min_token_prob": 0.3,
        "first_token_margin": 0.2,
        "length_tokens": 2.0,
    }


def test_features_round_trip_through_dict():
    f = extract_features([LN(0.5), LN(0.7)], [LN(0.5), LN(0.2)], "", "length")
    data = f.to_dict()
    assert data["failed_check"] == "truncated"
    assert Features.from_dict({**data, "unrelated": 1}) == f


def test_features_are_frozen():
    f = Features(0.0, 0.0, 1.0, 1.0, 1.0, 1)
    with pytest.raises(AttributeError):
        f.length_tokens = 2  # type: ignore[misc]


def test_a_short_one_line_answer_is_kept_as_its_label_for_the_policy():
    f = extract_features([LN(0.9)], [LN(0.9), LN(0.05)], text="  Card_Arrival. ")
    assert f.label == "card_arrival"
    assert Features.from_dict(f.to_dict()).label == "card_arrival"
    assert extract_features([LN(0.9)], text="line one\nline two").label is None
    assert extract_features([LN(0.9)], text="x" * 101).label is None


def test_features_stored_before_labels_read_back_and_write_the_same_dict():
    f = extract_features([LN(0.9)], text="")
    assert f.label is None and "label" not in f.to_dict()
    assert Features.from_dict(f.to_dict()) == f
