"""Cost accounting with hand-computed figures, and the SQL that sums it."""

from __future__ import annotations

import math
import time

import pytest

from understudy.gateway.accounting import prices as costs
from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.accounting.summary import parse_duration, summarize
from understudy.gateway.config import CostConfig
from understudy.settings import load_settings
from understudy.storage.database import open_database
from understudy.storage.records import RequestRecord
from understudy.storage.reports import cost_by, token_ratio_sums
from understudy.storage.request_log import write_rows

GPT4O = costs.Price(2.50, 10.00)


def test_teacher_cost_from_usage():
    # 1,000 prompt tokens at $2.50/M + 200 completion tokens at $10/M = 0.0025 + 0.002
    cost = costs.teacher_served(GPT4O, 1000, 200)
    assert cost.teacher_cost == pytest.approx(0.0045)
    assert cost.saved == 0 and cost.avoided == 0


def test_student_answer_saves_the_scaled_teacher_cost_less_its_own():
    # The teacher uses 1.2x the student's prompt tokens and 1.5x its completion tokens:
    # avoided = (500 * 1.2 * 2.50 + 40 * 1.5 * 10.00) / 1e6 = (1500 + 600) / 1e6 = 0.0021
    ratio = costs.TokenRatio(prompt=1.2, completion=1.5, pairs=10)
    cost = costs.student_served(GPT4O, 500, 40, ratio, student_cost=0.0001)
    assert cost.avoided == pytest.approx(0.0021)
    assert cost.saved == pytest.approx(0.0020)
    assert cost.teacher_cost == 0


def test_shadow_and_deferral_count_against_savings():
    shadow = costs.shadow_call(GPT4O, 1000, 200)
    assert shadow.teacher_cost == pytest.approx(0.0045)
    assert shadow.saved == pytest.approx(-0.0045)
    deferral = costs.teacher_served(GPT4O, 1000, 200, student_cost=0.0003)
    assert deferral.teacher_cost == pytest.approx(0.0045)
    assert deferral.saved == pytest.approx(-0.0003)  # the student's time was spent for nothing


def test_student_cost_models():
    assert costs.StudentCostModel().cost(10_000, 3.0) == 0  # a CPU box: free
    assert costs.StudentCostModel(per_million=0.20).cost(5000, 1.0) == pytest.approx(0.001)
    # $3.60/GPU-hour = $0.001/s; 2,000 tokens at a measured 1,000 tokens/s = 2 s = $0.002
    gpu = costs.StudentCostModel(gpu_hour=3.60, tokens_per_s=1000)
    assert gpu.cost(2000, 99.0) == pytest.approx(0.002)
    # Without a measured throughput, the generation's own rate: 0.5 s of GPU = $0.0005
    assert costs.StudentCostModel(gpu_hour=3.60).cost(100, 0.5) == pytest.approx(0.0005)


def test_token_ratio_from_sums_defaults_to_one_until_known():
    r = costs.TokenRatio.from_sums(1200, 300, 1000, 200, 7)
    assert (r.prompt, r.completion, r.pairs) == (1.2, 1.5, 7)
    assert costs.TokenRatio.from_sums(0, 0, 0, 0, 0) == costs.TokenRatio(1.0, 1.0, 0)


def test_price_lookup_and_overrides():
    table = costs.price_table({"my-70b": "0.9/0.9", "gpt-4o": "3/12"})
    assert costs.find_price(table, "gpt-4o-mini-2024-07-18") == costs.Price(0.15, 0.60)
    assert costs.find_price(table, "gpt-4o-2024-08-06") == costs.Price(3, 12)
    assert costs.find_price(table, "my-70b") == costs.Price(0.9, 0.9)
    assert costs.find_price(table, "unknown-model") is None
    assert costs.find_price(table, "gpt-4omega") is None  # a prefix must end at a dash


@pytest.mark.parametrize("bad", ["1", "a/b", "-1/2", "1/2/3", "nan/1"])
def test_bad_prices_are_refused_at_start_up(bad):
    with pytest.raises(ValueError):
        costs.parse_price(bad)
    from understudy.gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=r"costs\.prices\.m"):
        load_settings(env={"UNDERSTUDY_COSTS_PRICES": f"m={bad}"})


def test_projection_never_extrapolates_minutes_into_a_month():
    assert costs.projected_monthly(10.0, 7 * 86400) == pytest.approx(10.0 / 7 * 30)
    assert costs.projected_monthly(1.0, 600) == pytest.approx(30.0)  # at least one day


def test_parse_duration():
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("12h") == 43200
    with pytest.raises(ValueError):
        parse_duration("7 days")


def _row(task: str, served_by: str, at: float, **kw) -> RequestRecord:
    return RequestRecord(
        id=f"r{at}-{served_by}",
        created_at=at,
        endpoint="chat.completions",
        task=task,
        task_source="header",
        requested_model="gpt-4o",
        served_by=served_by,
        status="ok",
        request_json="{}",
        **kw,
    )


def test_a_longer_model_name_is_never_priced_as_a_cheaper_shorter_one():
    table = costs.price_table({})
    assert costs.find_price(table, "o3-2025-04-16") == costs.Price(2.0, 8.0)
    assert costs.find_price(table, "gpt-4.1-mini-2025-04-14") == costs.Price(0.40, 1.60)
    assert costs.find_price(table, "gpt-3.5-turbo-0125") == costs.Price(0.50, 1.50)
    for model in ("o3-pro-2025-06-10", "o3-pro", "o3-deep-research", "gpt-4o-audio-preview"):
        assert costs.find_price(table, model) is None, model


def test_an_unpriced_teacher_model_is_charged_the_highest_prices_while_a_usd_budget_is_on(
    caplog,
):
    dearest = costs.highest_price(costs.price_table({}))
    assert dearest == costs.Price(2.50, 10.00)
    row = _row("t", "teacher", time.time(), prompt_tokens=1000, completion_tokens=1000)
    row.teacher_model = "o1-2024-12-17"
    assert CostBook(CostConfig()).fill(row).teacher_cost == 0.0  # no budget: unpriced is 0
    book = CostBook(CostConfig(), conservative=True)
    with caplog.at_level("WARNING", logger="understudy.costs"):
        for model in ("o1-2024-12-17", "gpt-5-2025-08-07", "o1-2024-12-17"):
            row.teacher_model = model
            assert book.fill(row).teacher_cost == pytest.approx(dearest.cost(1000, 1000))
    assert book.unpriced == {"o1-2024-12-17": 2, "gpt-5-2025-08-07": 1}
    warned = [r for r in caplog.records if "has no price" in r.getMessage()]
    assert len(warned) == 2  # once per model
    student = _row("t", "student", time.time(), prompt_tokens=10, completion_tokens=10)
    student.requested_model = "o1-2024-12-17"
    assert book.fill(student).avoided == 0.0  # savings are never valued at a guessed price


def test_cost_book_fills_rows_and_sql_sums_them_per_task_day_and_key(tmp_path):
    """A teacher answer, a deferral, a student answer and a shadow call, all hand-computed."""
    db = open_database(tmp_path / "u.db")
    book = CostBook(CostConfig(student_per_million=1.0))
    day = 86400 * (int(time.time()) // 86400 - 1)  # yesterday, 00:00 UTC
    teacher = _row(
        "t",
        "teacher",
        day + 10,
        teacher_model="gpt-4o-2024-08-06",
        prompt_tokens=1000,
        completion_tokens=100,
        api_key_id="key_a",
    )
    deferred = _row(
        "t",
        "teacher",
        day + 20,
        teacher_model="gpt-4o",
        prompt_tokens=1000,
        completion_tokens=100,
        route_reason="deferred: below_threshold",
        student_cost_usd=book.student_cost(1000, 0.1),
        api_key_id="key_b",
    )
    student = _row(
        "t",
        "student",
        day + 30,
        prompt_tokens=800,
        completion_tokens=50,
        student_cost_usd=book.student_cost(850, 0.1),
        api_key_id="key_a",
    )
    shadow = _row(
        "t",
        "shadow",
        day + 31,
        teacher_model="gpt-4o",
        prompt_tokens=1000,
        completion_tokens=100,
        route_reason=f"shadow of {student.id}",
    )
    for record in (teacher, deferred, student, shadow):
        book.fill(record)
    # teacher: 1000*2.5/1e6 + 100*10/1e6 = 0.0035; deferral: same, and 1000 student tokens
    # at $1/M = 0.001 lost; student: 800*2.5/1e6 + 50*10/1e6 = 0.0025 avoided (ratio 1.0
    # until learned), less 850 * $1/M; shadow: 0.0035 against savings.
    assert teacher.teacher_cost_usd == pytest.approx(0.0035) and teacher.saved_usd == 0
    assert deferred.saved_usd == pytest.approx(-0.001)
    assert student.avoided_cost_usd == pytest.approx(0.0025)
    assert student.saved_usd == pytest.approx(0.0025 - 0.00085)
    assert shadow.saved_usd == pytest.approx(-0.0035)
    write_rows(db, "requests", [r.as_row() for r in (teacher, deferred, student, shadow)])
    write_rows(
        db,
        "student_attempts",
        [
            _attempt(deferred.id, "failure", day + 20, 500, 50),
            _attempt(student.id, "shadow", day + 31, 800, 50),
        ],
    )

    (per_task,) = cost_by(db, "task", day, day + 86400)
    assert per_task["requests"] == 3 and per_task["shadow_calls"] == 1
    assert per_task["deferred"] == 1 and per_task["student"] == 1
    assert per_task["teacher_spend_usd"] == pytest.approx(0.0035 * 3)
    assert per_task["saved_usd"] == pytest.approx(0.0025 - 0.00085 - 0.001 - 0.0035)
    per_key = {r["key"]: r for r in cost_by(db, "api_key", day, day + 86400)}
    assert per_key["key_a"]["requests"] == 2 and per_key["-"]["shadow_calls"] == 1
    (per_day,) = cost_by(db, "day", day, day + 86400)
    assert per_day["key"] == time.strftime("%Y-%m-%d", time.gmtime(day))

    # The ratio is learned from both pairs: teacher prompt 2000 / student 1300, completion
    # 200 / 100; the next student answer is valued with it.
    sums = token_ratio_sums(db, day)["t"]
    assert (sums["pairs"], sums["tp"], sums["sp"], sums["tc"], sums["sc"]) == (
        2,
        2000,
        1300,
        200,
        100,
    )
    book.refresh(tmp_path / "u.db")
    assert book.ratio("t").prompt == pytest.approx(2000 / 1300)
    assert book.ratio("t").completion == pytest.approx(2.0)
    again = _row("t", "student", day + 40, prompt_tokens=1300, completion_tokens=100)
    book.fill(again)
    assert again.avoided_cost_usd == pytest.approx((2000 * 2.5 + 200 * 10) / 1e6)

    summary = summarize(
        db, window_s=86400, quality_target=0.97, student_free=False, now=day + 86400
    )
    assert summary.requests == 3 and summary.coverage == pytest.approx(1 / 3)
    assert summary.saved_usd == pytest.approx(per_task["saved_usd"])
    assert summary.agreement == pytest.approx(1.0) and summary.compared == 1
    assert math.isclose(summary.projected_monthly_usd, summary.saved_usd * 30)


def _attempt(request_id: str, kind: str, at: float, prompt: int, completion: int) -> dict:
    return {
        "request_id": request_id,
        "created_at": at,
        "task": "t",
        "student_version": "t@v1",
        "kind": kind,
        "agreed": 1 if kind == "shadow" else None,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }


def test_before_the_token_ratio_is_learned_a_student_answer_is_a_conservative_estimate(tmp_path):
    """Right after a promotion no (student, teacher) pair exists yet: the student's own token
    counts (a small tokenizer: several times the teacher's) must not be valued at ratio 1."""
    from understudy.report import render_table

    db = open_database(tmp_path / "u.db")
    book = CostBook(CostConfig())
    now = time.time()
    teacher = [
        _row(
            "t",
            "teacher",
            now - 100 + i,
            teacher_model="gpt-4o",
            prompt_tokens=p,
            completion_tokens=c,
        )
        for i, (p, c) in enumerate([(900, 80), (1100, 120)])
    ]
    for record in teacher:
        book.fill(record)
    write_rows(db, "requests", [r.as_row() for r in teacher])
    book.refresh(tmp_path / "u.db")

    student = _row("t", "student", now - 10, prompt_tokens=5500, completion_tokens=400)
    book.fill(student)
    # At most the task's mean teacher answer: 1000 prompt and 100 completion tokens, not the
    # student's 5500 and 400 (which would be 0.01775).
    assert student.avoided_cost_usd == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert student.cost_estimated == 1
    small = _row("t", "student", now - 9, prompt_tokens=500, completion_tokens=20)
    book.fill(small)  # fewer tokens than the mean: its own count, the smaller
    assert small.avoided_cost_usd == pytest.approx((500 * 2.5 + 20 * 10) / 1e6)
    write_rows(db, "requests", [student.as_row(), small.as_row()])

    summary = summarize(db, window_s=3600, quality_target=0.97, student_free=True, now=now)
    assert summary.estimated == 2 and summary.tasks[0].estimated == 2
    assert "(estimate: 2 student answers valued before the token ratio was learned)" in (
        render_table(summary, 3600)
    )
    page = _dashboard(tmp_path / "u.db", now)
    assert "Saved (estimate)" in page
    assert "estimate: 2 student answers valued before the token ratio was learned" in page

    write_rows(db, "student_attempts", [_attempt(teacher[1].id, "failure", now - 99, 4400, 240)])
    book.refresh(tmp_path / "u.db")  # a pair: the ratio is known
    learned = _row("t", "student", now - 5, prompt_tokens=4400, completion_tokens=240)
    book.fill(learned)
    assert learned.cost_estimated is None
    assert learned.avoided_cost_usd == pytest.approx((1100 * 2.5 + 120 * 10) / 1e6)


def _dashboard(db_path, now: float) -> str:
    from understudy.gateway.api.dashboard.data import gather
    from understudy.gateway.api.dashboard.page import render_page
    from understudy.storage.database import Store

    data = gather(Store(db_path), load_settings(env={}), 3600, now=now)
    return render_page(data, window="1h", admin=False, nonce="n")
