import pytest

from understudy.router import answers_agree, chrf, normalise_label


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("  Card  Lost!! ", "card lost"),
        ("REFUND.", "refund"),
        ("refund\n", "refund"),
        ("lost_or_stolen_card", "lost_or_stolen_card"),
        ("Straße?", "strasse"),
        ("what? no.", "what? no"),
        ("«oui» …", "«oui"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalise_label(text, label):
    assert normalise_label(text) == label


def test_labels_agree_after_normalisation_only():
    assert answers_agree("Refund.", " refund", "label")
    assert answers_agree("card   lost", "Card Lost", "label")
    assert not answers_agree("refund", "refunds", "label")
    assert not answers_agree("card_lost", "card lost", "label")


def test_json_agreement_compares_parsed_values():
    assert answers_agree('{"a": 1, "b": [1, 2]}', '{ "b": [1, 2.0], "a": 1 }', "json")
    assert not answers_agree('{"a": 1}', '{"a": true}', "json")
    assert not answers_agree('{"a": [2, 1]}', '{"a": [1, 2]}', "json")
    assert not answers_agree('{"a": 1', '{"a": 1}', "json")


def test_json_agreement_when_the_teacher_is_not_json():
    assert answers_agree("Sorry.", "sorry", "json")
    assert not answers_agree('{"a": 1}', "sorry", "json")


def test_chrf_by_hand():
    # "ab" vs "abc": unigrams P=1, R=2/3, F2=10/14; bigrams P=1, R=1/2, F2=2.5/4.5; no trigrams
    # in "ab", so two orders count.
    assert chrf("ab", "abc") == pytest.approx((10 / 14 + 2.5 / 4.5) / 2)
    # "abcd" vs "abxy": F2 = 1/2 for unigrams, 1/3 for bigrams, 0 for 3- and 4-grams.
    assert chrf("abcd", "abxy") == pytest.approx((0.5 + 1 / 3) / 4)


def test_chrf_edges():
    assert chrf("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert chrf("the cat sat", "thecat  sat") == pytest.approx(1.0)  # whitespace is ignored
    assert chrf("", "  ") == 1.0
    assert chrf("", "cat") == 0.0 and chrf("cat", "") == 0.0
    assert chrf("xyz", "abc") == 0.0
    # Recall weighs more than precision: dropping words costs more than adding them.
    ref = "your card will arrive within five days"
    assert chrf(ref + " and thanks", ref) > chrf("your card will arrive", ref)


def test_text_agreement_uses_the_chrf_threshold():
    teacher = "Your new card will arrive within five working days."
    assert answers_agree("Your new card will arrive within five working days!", teacher, "text")
    assert not answers_agree("Please contact support to cancel.", teacher, "text")
    close = "Your new card should arrive in five working days."
    score = chrf(close, teacher)
    assert 0.5 < score < 0.9
    assert answers_agree(close, teacher, "text", chrf_threshold=score)
    assert not answers_agree(close, teacher, "text", chrf_threshold=score + 0.01)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown kind"):
        answers_agree("a", "a", "regex")
