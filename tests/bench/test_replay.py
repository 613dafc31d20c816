"""``bench/replay.py``'s scoring: what users received, judged against gold and the teacher."""

from __future__ import annotations

import pytest

from bench.replay import LAMBDA, averaged, options_for, parse_args, plot, scores
from gateway.demo.banking77 import Query
from gateway.demo.report import Summary
from gateway.demo.traffic import Answered


def _answered(answer: str, served_by: str, gold: str = "a", teacher: str = "a") -> Answered:
    return Answered(Query("q", gold, teacher), answer, served_by, None, 1.0)


def _summary(answered: list[Answered], teacher_calls: int) -> Summary:
    return Summary(0, answered, teacher_calls, 0.0, 0.0, promotions=["banking77@v1"])


def test_a_run_is_scored_on_what_users_received():
    answered = (
        [_answered("a", "teacher")] * 4  # the teacher, right
        + [_answered("b", "teacher", gold="a", teacher="b")] * 2  # the teacher, wrong
        + [_answered("a", "student")] * 3  # the student agrees and is right
        + [_answered("c", "student")]  # the student is wrong and disagrees
    )
    result = scores(_summary(answered, teacher_calls=7))  # 6 answers + 1 shadow check

    assert result["requests"] == 10
    assert result["accuracy"] == pytest.approx(0.7)
    assert result["teacher_alone"] == pytest.approx(0.8)
    assert result["agreement"] == pytest.approx(0.9)
    assert result["student_agreement"] == pytest.approx(0.75)
    assert result["saved"] == pytest.approx(0.3)
    assert result["discounted"] == pytest.approx(0.7 - LAMBDA * 0.7)
    assert result["curve"] == [{"requests": 10, "student_share": 0.4, "accuracy": 0.7}]


def test_seeds_are_averaged_per_quality_target():
    runs = [
        {"seed": s, "target": t, **scores(_summary([_answered("a", "student")] * 4, calls))}
        for s, t, calls in ((0, 0.9, 1), (1, 0.9, 3), (0, 0.95, 4))
    ]
    rows = averaged(runs)

    assert [r["target"] for r in rows] == [0.9, 0.95]
    assert rows[0]["teacher_calls"] == 2 and rows[0]["saved"] == pytest.approx(0.5)
    assert rows[0]["promotions"] == 2
    assert rows[1]["saved"] == 0


def test_options_follow_the_protocol(tmp_path):
    args = parse_args(["--k", "250", "--history", "9002", "--limit", "500"])
    options = options_for(args, seed=2, target=0.9, data_dir=tmp_path)

    assert (options.intents, options.requests, options.history) == (77, 500, 9002)
    assert options.warmup == options.every == 250  # first run after K teacher answers
    assert (options.seed, options.quality_target) == (2, 0.9)


def test_the_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    row = {"target": 0.9, "saved": 0.4, "accuracy": 0.82}
    assert plot([row], tmp_path / "replay.png")
    assert (tmp_path / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
