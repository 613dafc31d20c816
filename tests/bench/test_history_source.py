"""``bench/history_source.py --first-run``: label rates from the other folds' live answers."""

from __future__ import annotations

from bench.history_source import FOLDS, fold_rates, shrunk
from understudy.student.classical import fold_of


def test_rates_are_shrunk_towards_the_overall_agreement():
    default, rates = shrunk([("a", True), ("a", True), ("b", False)])
    assert default == (2 + 1) / (3 + 2)
    assert rates["a"] == (2 + 2 * default) / (2 + 2)
    assert rates["b"] == (0 + 2 * default) / (1 + 2)


def test_no_answer_moves_the_rates_of_its_own_fold():
    texts = [f"query {i}" for i in range(40)]
    answers = [("a" if i % 2 else "b", 0.5, i % 3 == 0) for i in range(40)]
    before = fold_rates(answers, texts)
    for i, text in enumerate(texts):
        flipped = list(answers)
        label, margin, agreed = flipped[i]
        flipped[i] = (label, margin, not agreed)
        after = fold_rates(flipped, texts)
        own = fold_of(text, FOLDS)
        assert after[own] == before[own]
        assert any(after[k] != before[k] for k in range(FOLDS) if k != own)
