"""The router benchmark's judging, calibration, curve and operating point, on a few dozen
answers whose confidence says exactly which ones are right."""

from __future__ import annotations

import random

import pytest

from bench.router import (
    calibrate,
    coverage_curve,
    decision_time_us,
    judge_traffic,
    operating_point,
    router_of,
)
from understudy.distiller.evaluate import ModelEval
from understudy.distiller.generate import Generation

NAMES = {"0": "card_arrival", "1": "lost_card", "2": "refund"}


def generation(text: str, sure: bool, rng: random.Random) -> Generation:
    """A label answer: near-certain tokens when ``sure``, doubtful ones otherwise."""
    centre = -0.01 if sure else -2.0
    logprobs = [min(0.0, rng.gauss(centre, 0.005 if sure else 0.3)) for _ in range(3)]
    return Generation(
        text=text,
        logprobs=logprobs,
        first_alternatives=sorted([logprobs[0], logprobs[0] - rng.uniform(1, 5)], reverse=True),
        finish_reason="stop",
    )


@pytest.fixture(scope="module")
def held_out() -> ModelEval:
    """1,600 held-out answers: the sure ones agree with the teacher, the doubtful ones do not.
    (A fifth fit the policy; the 640 sure ones of the rest certify 0.99 with an exact bound,
    taken at 1 - 0.05 / 5 for the five sequences 1,280 answers give.)"""
    rng = random.Random(1)
    gens = [generation("lost_card", i % 2 == 0, rng) for i in range(1600)]
    from bench._banking77 import features_of

    return ModelEval(
        agreed=[i % 2 == 0 for i in range(1600)],
        valid=[True] * 1600,
        features=[features_of(g).to_dict() for g in gens],
        answers=[g.text for g in gens],
    )


@pytest.fixture(scope="module")
def routers(held_out: ModelEval) -> dict[float, dict]:
    return calibrate(held_out, (0.95, 0.97, 0.99))


@pytest.fixture(scope="module")
def traffic_case() -> tuple[list[Generation], list[dict[str, str]]]:
    """40 queries: 20 the student is sure of and gets right (the teacher too), 20 it doubts
    and gets wrong, disagreeing with the teacher, who gets 10 of them right; plus one cut-off
    answer."""
    rng = random.Random(2)
    gens, rows = [], []
    for i in range(20):
        gens.append(generation("lost_card", True, rng))
        rows.append({"text": f"q{i}", "label": "1", "gpt-label": "1"})
    for i in range(20):
        gens.append(generation("refund", False, rng))
        rows.append({"text": f"d{i}", "label": "0", "gpt-label": "0" if i < 10 else "1"})
    cut = generation("lost_card", True, rng)
    cut.finish_reason = "length"
    gens.append(cut)
    rows.append({"text": "cut", "label": "1", "gpt-label": "1"})
    return gens, rows


def test_student_is_judged_against_teacher_and_gold(traffic_case):
    gens, rows = traffic_case
    traffic = judge_traffic(gens, rows, NAMES)
    assert sum(r.agrees_with_teacher for r in traffic) == 21  # 20 sure + the cut one
    assert sum(r.student_correct for r in traffic) == 21
    assert sum(r.teacher_correct for r in traffic) == 31
    assert traffic[-1].features.failed_check == "truncated"


def test_operating_points_serve_the_sure_answers_and_never_a_cut_one(routers, traffic_case):
    gens, rows = traffic_case
    traffic = judge_traffic(gens, rows, NAMES)
    served_at = {}
    for target in (0.95, 0.97, 0.99):
        point = operating_point(routers[target], traffic)
        assert point["quality_target"] == target
        assert point["calibration"]["agreement_lower_bound"] >= target
        router = router_of(routers[target])
        served = {i for i, r in enumerate(traffic) if router.decide(r.features).serve}
        assert set(range(20)) <= served  # every sure answer
        assert len(traffic) - 1 not in served  # never the truncated one
        assert point["traffic"]["served"] == len(served)
        served_at[target] = served
    # The calibrated ranking is fine enough to trade coverage for quality: a lower target may
    # add the most confident of the doubtful answers (up to its certified bound on the held-out
    # set), a higher one serves a subset of what a lower one serves.
    assert served_at[0.99] <= served_at[0.97] <= served_at[0.95]
    assert served_at[0.99] == set(range(20))
    point = operating_point(routers[0.99], traffic)
    assert point["traffic"]["agreement_with_teacher"] == 1.0
    # users get the student's 20 right answers, and the teacher's 11 right of the other 21
    assert point["delivered_accuracy_vs_gold"] == round(31 / 41, 4)


def test_curve_ranks_by_confidence_and_ends_at_every_valid_answer(routers, traffic_case):
    gens, rows = traffic_case
    traffic = judge_traffic(gens, rows, NAMES)
    router = router_of(routers[0.95])
    curve = coverage_curve(router, traffic, coverages=(0.25, 0.5, 1.0))
    coverages = [p["coverage"] for p in curve]
    assert coverages == sorted(coverages)
    assert curve[0]["agreement_with_teacher"] == 1.0
    assert curve[-1]["served"] == 40  # the truncated answer is never served
    assert curve[-1]["agreement_with_teacher"] == 0.5


def test_decision_time_is_measured_per_call(routers, traffic_case):
    # What is timed, not how fast it was (timings belong to the benchmark's table): each
    # figure is the time of exactly ``decisions`` calls after a warm-up, over all the traffic.
    gens, rows = traffic_case
    traffic = judge_traffic(gens, rows, NAMES)

    class Counted:
        def __init__(self, router):
            self.router, self.seen = router, []

        def decide(self, features):
            self.seen.append(features)
            return self.router.decide(features)

    router = Counted(router_of(routers[0.97]))
    timing = decision_time_us(router, gens, traffic, decisions=500)

    assert timing["decisions"] == 500
    assert timing["decide_us"] >= 0 and timing["extract_and_decide_us"] >= 0
    warm = min(1000, len(traffic)) + min(1000, len(gens))
    assert len(router.seen) == warm + 2 * 500
    timed_decisions = router.seen[min(1000, len(traffic)) : min(1000, len(traffic)) + 500]
    assert timed_decisions[: len(traffic)] == [r.features for r in traffic][:500]
