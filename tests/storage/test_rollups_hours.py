"""The per-hour rollup (``rollup_hours``) and the closed hours a report keeps: a long window's
report reads the current hour's rows, and counts a late row of a closed hour all the same."""

from __future__ import annotations

import random
import re
import time
from typing import Any

from tests.storage.test_rollups import (
    HOUR,
    T0,
    _all_reports,
    copy_of,
    database_at,
    log_workload,
    old_cost_by,
    old_cost_totals,
    same,
    workload,
)
from understudy.storage import reports
from understudy.storage.database import Store, open_database
from understudy.storage.engine import Address
from understudy.storage.request_log import RequestLogWriter
from understudy.storage.retention import prune

WINDOW = (T0 - 16 * HOUR, T0 + 24 * HOUR)


def _hours(db: Any) -> dict[int, int]:
    return {r["hour"]: r["calls"] for r in db.query("select hour, calls from rollup_hours")}


def _wide_hours(db: Any) -> dict[int, int]:
    rows = db.query("select hour, sum(calls) as n from rollup_requests group by hour")
    return {r["hour"]: r["n"] for r in rows}


def test_the_hour_rollup_is_the_sum_of_the_wide_ones(address):
    """Written by the log writer (ids sent twice counted once), then after retention."""
    log_workload(address)
    with Store(address).read() as db:
        hours = _hours(db)
        assert len(hours) == 40 and sum(hours.values()) == 1500
        assert hours == _wide_hours(db)
    db = open_database(address)
    try:
        assert prune(db, T0)["requests"] > 0
        assert _hours(db) == hours == _wide_hours(db)  # retention keeps the rollups
    finally:
        db.conn.close()


def test_the_log_writer_leaves_the_processs_random_numbers_alone(address):
    """The writer drew each hour's stamp from the global ``random`` module, on its own thread
    at times set by the traffic: a seeded sequence in the same process (a replay's, a
    property test's) came out differently from run to run."""
    random.seed(18)
    before = random.getstate()
    log_workload(address)
    assert random.getstate() == before
    with Store(address).read() as db:
        assert len(_hours(db)) == 40  # the stamps were written all the same


def test_the_migration_fills_the_hour_rollup_from_an_existing_log(tmp_path):
    path = tmp_path / "old.db"
    with database_at(path, "0007_security") as db:
        rows, _ = workload(800, seed=7)
        db["requests"].insert_all(rows)
    assert "0019_hour_changes" in Store(path).migrate()
    db = open_database(path)
    assert _hours(db) == _wide_hours(db) and sum(_hours(db).values()) == 800
    same(reports.cost_by(db, "day", *WINDOW), old_cost_by(db, "day", *WINDOW))


def _log_late(address: Address, rows: list[dict[str, Any]]) -> None:
    writer = RequestLogWriter(address, commit_interval_ms=5, batch_size=50)
    writer.start()
    for row in rows:
        writer.submit("requests", row)
    writer.close()
    assert writer.dropped == 0


def test_a_late_row_of_a_closed_day_is_counted_by_the_next_report(address):
    """The closed hours' sums a report kept are read again once a row of theirs is logged."""
    log_workload(address)
    with Store(address).read() as db:
        before = _all_reports(db, *WINDOW)
        assert _all_reports(db, *WINDOW) == before  # kept: the same
    late, _ = workload(30, seed=99)
    _log_late(address, [{**r, "id": f"late_{i}"} for i, r in enumerate(late)])
    with Store(address).read() as db:
        after = _all_reports(db, *WINDOW)
        assert after["totals"]["requests"] > before["totals"]["requests"]
        if isinstance(address, str):
            return  # PostgreSQL: the counts; the scan oracle below is SQLite's SQL
        same(after["totals"], old_cost_totals(db, *WINDOW))
        same(reports.cost_by(db, "day", *WINDOW), old_cost_by(db, "day", *WINDOW))


def test_a_month_read_twice_reads_the_closed_hours_once(tmp_path, sql_statements):
    """The second report of a long window reads the current hour's rows and the hours' totals,
    not the closed hours' and days' sums: its time follows the hour's traffic, not the
    month's."""
    now = time.time()
    path = log_workload(tmp_path / "u.db", start=now - 40 * HOUR)
    month = (now - 30 * 24 * HOUR, now)
    with Store(path).read() as db:
        first = _window_reports(db, *month)
    current = int(now // HOUR)
    assert min(_spans(sql_statements)) < current  # the closed hours and days, read once
    sql_statements.clear()
    with Store(path).read() as db:
        second = _window_reports(db, *month)
    assert second == first and first["totals"]["requests"] > 1000
    assert min(_spans(sql_statements), default=current) >= current  # the current hour's only
    assert any("rollup_hours" in s for s in sql_statements)


def _window_reports(db: Any, since: float, until: float) -> dict[str, Any]:
    """The reports of a window (the budgets' read and the task list have their own)."""
    return {
        "totals": reports.cost_totals(db, since, until),
        "by": [reports.cost_by(db, g, since, until) for g in ("task", "day", "api_key")],
        "series": reports.cost_series(db, since, until, 86400, anchor=0),
        "relayed": reports.passthrough_by_endpoint(db, since, until),
        "latency": reports.latency_summary(db, since, until),
    }


_SPAN = re.compile(r"from (rollup_(?!hours)\w+) where hour >= (\d+)")


def _spans(statements: list[str]) -> list[int]:
    """The first hour of each span of a rollup table (but ``rollup_hours``) they read."""
    return [int(m.group(2)) for s in statements for m in _SPAN.finditer(s)]


def test_a_copy_of_a_log_does_not_read_what_its_source_kept(tmp_path):
    """Two databases with the same days: each report reads its own."""
    path = log_workload(tmp_path / "a.db")
    with Store(path).read() as db:
        kept = reports.cost_totals(db, *WINDOW)
    copy = copy_of(path, tmp_path / "b.db")
    late, _ = workload(20, seed=5)
    copy.conn.close()
    _log_late(tmp_path / "b.db", [{**r, "id": f"late_{i}"} for i, r in enumerate(late)])
    with Store(tmp_path / "b.db").read() as db:
        same(reports.cost_totals(db, *WINDOW), old_cost_totals(db, *WINDOW))
    with Store(path).read() as db:
        assert reports.cost_totals(db, *WINDOW) == kept


def test_the_metrics_totals_read_closed_days_from_the_daily_sums(tmp_path, sql_statements):
    """``/metrics``' first read of a log: the same totals as its hours, a row a day."""
    path = log_workload(tmp_path / "u.db")
    with Store(path).read() as db:
        rows = reports.log_totals(db, 0)
        hourly = db.query(
            "select task, served_by, sum(calls) as calls, sum(errors) as errors,"
            " sum(teacher_cost_usd) as teacher_cost_usd, sum(saved_usd) as saved_usd"
            " from rollup_tasks group by task, served_by"
        )
        want = {(r["task"], r["served_by"]): r for r in hourly}
    got: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        acc = got.setdefault((r["task"], r["served_by"]), dict.fromkeys(_TOTALS, 0))
        for column in _TOTALS:
            acc[column] += r[column]
    same(got, {k: {c: v[c] for c in _TOTALS} for k, v in want.items()})
    assert {r["hour"] % 24 for r in rows} == {0}  # whole days: one row each
    assert any("from rollup_tasks_daily" in s for s in sql_statements)


_TOTALS = ("calls", "errors", "teacher_cost_usd", "saved_usd")
