"""``bench/headroom.py``: the replay's streams served with the truth in place of a certificate."""

from __future__ import annotations

import argparse
import itertools
import math

from bench.headroom import one, stream, widest
from tests.distiller.certification import stream as replay_order


def test_the_widest_threshold_serves_ties_together_and_nothing_when_nothing_agrees():
    confidence = [0.9, 0.8, 0.8, 0.5]
    agreed = [True, True, False, False]
    assert widest(confidence, agreed, 0.6) == 0.8  # 2 of the 3 at 0.8 or above
    assert widest(confidence, agreed, 0.7) == 0.9  # not the first two alone: 0.8 is one group
    assert math.isinf(widest(confidence, [False] * 4, 0.5))


def test_the_stream_is_the_replays_in_its_order():
    _, queries, rest = stream(2, "gpt35-label_rep", 1000, 0)
    assert [*queries, *rest] == replay_order(2, "gpt35-label_rep")
    logged, _, _ = stream(2, "gpt35-label_rep", 1000, 500)
    assert len(logged) == 500


def test_runs_come_every_k_teacher_calls_and_learn_only_from_the_teachers_answers():
    args = argparse.Namespace(limit=400, k=150, history=0, target=0.8, settings={})
    row = one(0, "gpt-label", args)
    runs = row["runs"]
    assert len(runs) >= 2
    assert runs[0]["at_query"] == 150 and runs[0]["trained_on"] == 150
    assert row["served"] > 0 and row["saved"] == row["served"] / 400
    for before, after in itertools.pairwise(runs):
        assert after["trained_on"] - before["trained_on"] == 150  # served answers never train
        assert after["at_query"] - before["at_query"] > 150  # what it served came between
    assert all(r["served_agreement_unseen"] >= 0.8 for r in runs if r["coverage_unseen"])
