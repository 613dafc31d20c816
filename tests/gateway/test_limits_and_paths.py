"""Token buckets, monthly budgets and path confinement, on their own."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from understudy.gateway.api.limits import MonthlyBudgets, TokenBuckets, next_month_start
from understudy.student.base import StudentModel
from understudy.student.paths import PathNotAllowedError, check_model_ref, check_student, confine


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_a_burst_then_the_rate_per_client():
    clock = Clock(100.0)
    buckets = TokenBuckets(per_minute=60, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(1.0)  # one token a second
    assert buckets.take("b") == 0.0  # another client has its own bucket
    clock.t += 0.5
    assert buckets.take("a") == pytest.approx(0.5)
    clock.t += 0.5
    assert buckets.take("a") == 0.0
    clock.t += 3600
    assert [buckets.take("a") for _ in range(4)][-1] > 0  # refills to the burst, no more


def test_month_boundaries_in_utc():
    dec = dt.datetime(2026, 12, 31, 23, 0, tzinfo=dt.UTC).timestamp()
    assert next_month_start(dec) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()


def test_budget_counts_logged_rows_per_key_and_renews_each_month():
    clock = Clock(dt.datetime(2026, 3, 30, tzinfo=dt.UTC).timestamp())
    budgets = MonthlyBudgets(monthly_tokens=100, monthly_usd=0.5, clock=clock)
    row = {"api_key_id": "key_a", "total_tokens": 60, "created_at": clock.t}
    budgets.record("requests", row)
    budgets.record("student_attempts", row)  # only request rows count
    budgets.record("requests", {**row, "api_key_id": None})
    assert budgets.check("key_a") is None and budgets.used("key_a") == (60, 0.0)
    budgets.record("requests", row)
    assert budgets.check("key_a") == "100 tokens"
    assert 0 < budgets.renews_in() <= 2 * 86400
    budgets.record("requests", {"api_key_id": "key_b", "teacher_cost_usd": 0.5, "created_at": 1})
    assert budgets.check("key_b") is None  # a row from an earlier month does not count
    budgets.record("requests", {"api_key_id": "key_b", "teacher_cost_usd": 0.5})
    assert budgets.check("key_b") == "0.5 USD"
    clock.t += 3 * 86400  # April
    assert budgets.check("key_a") is None and budgets.used("key_b") == (0, 0.0)


def test_requests_in_flight_reserve_budget_until_settled_or_lapsed():
    now = [1_700_000_000.0]
    budgets = MonthlyBudgets(monthly_tokens=50, clock=lambda: now[0])
    budgets.reserve("r1", "key_a", 30)
    assert budgets.check("key_a") is None  # 30 of 50: another may start
    budgets.reserve("r2", "key_a", 30)
    assert budgets.check("key_a") == "50 tokens"  # 60 reserved: the rest wait
    assert budgets.check("key_b") is None
    budgets.record(
        "requests", {"id": "r1", "api_key_id": "key_a", "total_tokens": 7, "created_at": now[0]}
    )
    assert budgets.reserved("key_a") == 30 and budgets.check("key_a") is None  # 7 + 30
    budgets.settle("r2")
    budgets.settle("r2")  # twice is harmless
    assert budgets.reserved("key_a") == 0 and budgets.used("key_a") == (7, 0.0)
    budgets.reserve("r3", "key_a", 100)
    assert budgets.check("key_a") == "50 tokens"
    now[0] += 601  # a request never logged: its reservation lapses
    assert budgets.reserved("key_a") == 0 and budgets.check("key_a") is None


def test_paths_must_stay_inside_the_data_dir(tmp_path):
    data = tmp_path / "data"
    (data / "models" / "t").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    assert confine(data / "models" / "t", data) == (data / "models" / "t").resolve()
    for bad in (
        tmp_path / "elsewhere",
        data / "models" / ".." / ".." / "elsewhere",
        "/etc/passwd",
        "~",
        "",
        "models/t",  # relative to the working directory, not the data directory
    ):
        with pytest.raises(PathNotAllowedError):
            confine(bad, data)
    os.symlink(tmp_path / "elsewhere", data / "models" / "link")
    with pytest.raises(PathNotAllowedError):  # symlinks are followed
        confine(data / "models" / "link", data)


def test_base_models_are_hub_ids_or_confined_paths(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    for hub_id in ("gpt2", "Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-1B-Instruct"):
        assert check_model_ref(hub_id, data) == hub_id
    for bad in ("/etc", "../x", "./x", "a/b/c", "org/..", "~/models"):
        with pytest.raises(PathNotAllowedError):
            check_model_ref(bad, data)
    (tmp_path / "org" / "model").mkdir(parents=True)  # a local directory shaped like a hub id
    with pytest.raises(PathNotAllowedError):
        check_model_ref("org/model", data)
    assert check_model_ref(str(data), data) == str(data.resolve())
    with pytest.raises(PathNotAllowedError):
        check_student(StudentModel("t@v1", "gpt2", adapter_path=str(tmp_path)), data)
    check_student(StudentModel("t@v1", "gpt2", adapter_path=str(data)), data)
