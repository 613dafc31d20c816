"""``bench/replay.py``'s scoring: what users received, judged against gold and the teacher."""

from __future__ import annotations

import json

import pytest

from bench.replay import LAMBDA, averaged, combined, main, options_for, parse_args, scores
from understudy.demo.banking77 import Query
from understudy.demo.config import gateway_config
from understudy.demo.report import Summary
from understudy.demo.traffic import Answered
from understudy.distiller.config import DatasetConfig
from understudy.student.classical import ClassicalSettings


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
    args = parse_args(
        ["--k", "250", "--history", "9002", "--limit", "500", "--warm-start-epochs", "1"]
    )
    options = options_for(args, seed=2, target=0.9, data_dir=tmp_path)

    assert (options.intents, options.requests, options.history) == (77, 500, 9002)
    assert options.warmup == options.every == 250  # first run after K teacher answers
    assert (options.seed, options.quality_target) == (2, 0.9)
    assert options.warm_start_epochs == 1
    assert options.extra["distiller.train"]["warm_start_lr_scale"] == 0.33
    assert options.extra["distiller.train"]["candidates"] == ["classical"]
    assert options.extra["distiller.gates"] == {}  # no overall-agreement gate, as in the product
    assert options.data is not None and len(options.data.test) == 3080
    assert options.first_every == 0  # every K throughout


def test_first_k_runs_sooner_until_a_promotion_and_sets_the_first_run(tmp_path):
    options = options_for(parse_args(["--k", "250", "--first-k", "100"]), 0, 0.8, tmp_path)
    assert (options.warmup, options.first_every, options.every) == (100, 100, 250)

    warmed = parse_args(["--first-k", "100", "--warmup", "150"])
    assert options_for(warmed, 0, 0.8, tmp_path).warmup == 150


def test_the_held_out_slice_is_the_products_unless_the_demos_is_asked_for(tmp_path):
    def section(name: str, *flags: str) -> str:
        options = options_for(parse_args(["--history", "9002", *flags]), 0, 0.8, tmp_path)
        config = gateway_config(options, teacher_url="http://t", port=1, model="m")
        return config.split(f"[{name}]\n", 1)[1].split("\n\n", 1)[0]

    # what a deployment gets: the distiller's defaults, the classical candidate widened to its own
    defaults = DatasetConfig()
    products = (
        f"eval_fraction = {defaults.eval_fraction!r}\neval_min = {defaults.eval_min}"
        f"\neval_max = {defaults.eval_max}"
    )
    widened = f"held_out_min = {ClassicalSettings().held_out_min}"
    assert section("distiller.dataset", "--k", "250") == products
    assert section("distiller.classical", "--k", "250") == widened
    assert section("distiller.dataset", "--held-out", "product") == products
    # the demo's: the K newest teacher answers, the live ones
    demo = ("--held-out", "demo")
    assert section("distiller.dataset", *demo, "--k", "250") == (
        "eval_fraction = 0.01\neval_min = 250\neval_max = 250"
    )
    assert section("distiller.classical", *demo, "--k", "250") == "held_out_min = 250"
    assert section("distiller.dataset", *demo, "--warmup", "500") == (
        "eval_fraction = 0.01\neval_min = 500\neval_max = 500"
    )


def _result_file(path, history, runs):
    path.write_text(json.dumps({"config": {"history": history}, "runs": runs}))
    return path


def test_results_of_separate_runs_combine_into_one_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")

    def run(seed, target, saved, accuracy):
        base = scores(_summary([_answered("a", "student")] * 4, 2))
        return base | {"seed": seed, "target": target, "saved": saved, "accuracy": accuracy}

    cold = _result_file(tmp_path / "c.json", 0, [run(0, 0.8, 0.1, 0.83)])
    history = [
        _result_file(tmp_path / f"h{s}.json", 9002, [run(s, 0.8, 0.6 + s / 10, 0.84)])
        for s in (0, 1)
    ]
    runs = combined([*history, cold])
    assert [(r["history"], r["seed"]) for r in runs] == [(0, 0), (9002, 0), (9002, 1)]

    out, png = tmp_path / "all.json", tmp_path / "all.png"
    assert (
        main(["--combine", str(cold), *map(str, history), "--out", str(out), "--plot", str(png)])
        == 0
    )

    result = json.loads(out.read_text())
    means = {r["history"]: r for r in result["mean"]}
    assert means[9002]["saved"] == pytest.approx(0.65) and means[9002]["seeds"] == 2
    assert means[0]["saved"] == pytest.approx(0.1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "| 9,002 history (gold) | gpt-label | mean | 0.8 |" in table
    assert "| cold | gpt-label | 0 | 0.8 |" in table


def test_a_run_whose_served_agreement_is_below_the_target_is_counted_as_a_miss():
    # The guarantee, every run: served agreement below target - 1 point is a bug to report.
    def summary(agreeing: int) -> Summary:
        served = [_answered("a", "student")] * agreeing + [_answered("b", "student")] * (
            100 - agreeing
        )
        return Summary(0, served, 5, 0.0, 0.0, quality_target=0.8)

    assert not scores(summary(80))["miss"] and not scores(summary(79))["miss"]
    assert scores(summary(78))["miss"]
    rows = averaged([{"seed": 0, "target": 0.8, **scores(summary(s))} for s in (78, 90)])
    assert rows[0]["misses"] == 1


def test_every_teacher_column_is_read_with_its_own_answers():
    from bench.replay import TEACHERS, bench_data

    columns = [bench_data(t) for t in TEACHERS]
    assert all(len(d.test) == 3080 and len(d.train) == 9002 for d in columns)
    agree = [sum(q.teacher == q.gold for q in d.test) / 3080 for d in columns]
    assert agree[0] == pytest.approx(0.8305, abs=1e-4)
    assert len(set(agree)) == 3


def test_a_history_from_the_test_split_is_the_teachers_answers_to_queries_off_the_stream():
    from bench.replay import bench_data
    from understudy.demo.banking77 import sample

    data = bench_data("gpt35-label_rep", "test", seed=1, limit=1000)
    live = sample(data.test, 1000, 1 + 1)  # what run_demo streams for seed 1
    assert len(data.train) == 3080 - 1000
    assert not {q.text for q in data.train} & {q.text for q in live}
    assert {q.text for q in data.train} | {q.text for q in live} == {q.text for q in data.test}
    assert all(q in data.test for q in data.train)  # the same teacher's answers
    assert sum(q.teacher != q.gold for q in data.train) > 0.15 * len(data.train)
    gold = bench_data("gpt35-label_rep", "train", seed=1, limit=1000)
    assert len(gold.train) == 9002 and all(q.teacher == q.gold for q in gold.train)
    assert main(["--history-from", "test", "--history", "2081", "--limit", "1000"]) == 2
