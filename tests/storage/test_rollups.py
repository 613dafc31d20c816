"""The hourly rollups: every report reads them and gives what the scan of ``requests`` gave.

The oracle is the scan each report function made before the rollups (kept here verbatim);
a mixed workload goes through the real log writer."""

from __future__ import annotations

import math
import random
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import quantiles
from typing import Any

import pytest

from understudy.storage import migrations, names, reports
from understudy.storage.database import Store, open_database
from understudy.storage.engine import Address, Database
from understudy.storage.limits import usage_since
from understudy.storage.queries import list_tasks
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter, write_rows
from understudy.storage.retention import prune
from understudy.storage.rollups import (
    NARROW,
    REQUEST_SUMS,
    TASK_LATENCY,
    TASK_LATENCY_KEYS,
    bucket_bounds,
    latency_bucket,
)

HOUR = 3600
T0 = 1_764_460_800  # 2025-11-30 00:00 UTC: the workload spans two days
TASKS = ("classify", "extract", "auto-1f2e")
KEYS = ("key_a", "key_b", None)
MODELS = ("gpt-4o", "gpt-4o-mini", None)


# -- the oracle: the scans of ``requests`` the reports made before the rollups --------------

_OLD_SUMS = """
    sum(served_by != 'shadow') as requests,
    sum(served_by = 'student') as student,
    sum(served_by = 'teacher') as teacher,
    sum(served_by = 'shadow') as shadow_calls,
    sum(served_by = 'teacher' and route_reason like 'deferred:%') as deferred,
    sum(status != 'ok' and served_by != 'shadow') as failed,
    coalesce(sum(prompt_tokens), 0) as prompt_tokens,
    coalesce(sum(completion_tokens), 0) as completion_tokens,
    coalesce(sum(teacher_cost_usd), 0.0) as teacher_spend_usd,
    coalesce(sum(case when served_by = 'shadow' then teacher_cost_usd end), 0.0)
        as shadow_spend_usd,
    coalesce(sum(avoided_cost_usd), 0.0) as avoided_usd,
    coalesce(sum(student_cost_usd), 0.0) as student_cost_usd,
    coalesce(sum(saved_usd), 0.0) as saved_usd,
    coalesce(sum(cost_estimated), 0) as estimated,
    min(created_at) as first_at,
    max(created_at) as last_at
"""
_OLD_GROUPS = {
    "task": "task",
    "day": "date(created_at, 'unixepoch')",
    "api_key": "coalesce(api_key_id, '-')",
}
_INTS = ("requests", "student", "teacher", "shadow_calls", "deferred", "failed")


def _old_clean(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, **{k: int(row.get(k) or 0) for k in _INTS}}


def old_cost_totals(db, since, until):
    (row,) = db.query(
        f"select {_OLD_SUMS} from requests where created_at >= ? and created_at < ?"
        " and served_by != 'passthrough'",
        [since, until],
    )
    return _old_clean(row)


def old_cost_by(db, group, since, until):
    rows = db.query(
        f"select {_OLD_GROUPS[group]} as key, {_OLD_SUMS} from requests where created_at >= ?"
        " and created_at < ? and served_by != 'passthrough' group by key order by key",
        [since, until],
    )
    return [_old_clean(r) for r in rows]


def old_cost_series(db, since, until, bucket_s):
    rows = db.query(
        "select task, cast((created_at - ?) / ? as integer) as bucket,"
        " sum(served_by != 'shadow') as requests, sum(served_by = 'student') as student,"
        " coalesce(sum(saved_usd), 0.0) as saved_usd"
        " from requests where created_at >= ? and created_at < ?"
        " and served_by != 'passthrough' group by task, bucket order by task, bucket",
        [since, bucket_s, since, until],
    )
    return [{**r, "start": since + r.pop("bucket") * bucket_s} for r in rows]


def old_passthrough(db, since, until):
    rows = [
        {**r, "endpoint": names.decode_value(db, r["endpoint"])}  # the log writes it coded
        for r in db.query(
            "select endpoint, count(*) as requests, sum(status != 'ok') as failed,"
            " coalesce(sum(bytes_in), 0) as bytes_in, coalesce(sum(bytes_out), 0) as bytes_out,"
            " coalesce(sum(total_tokens), 0) as tokens,"
            " coalesce(sum(teacher_cost_usd), 0.0) as teacher_spend_usd,"
            " avg(latency_ms) as mean_latency_ms from requests where served_by = 'passthrough'"
            " and created_at >= ? and created_at < ? group by endpoint",
            [since, until],
        )
    ]
    return sorted(rows, key=lambda r: r["endpoint"])


def old_live_agreement(db, since, until):
    rows = db.query(
        "select task, count(*) as compared, sum(agreed) as agreed from student_attempts"
        " where kind = 'shadow' and agreed is not null and created_at >= ? and created_at < ?"
        " group by task",
        [since, until],
    )
    return {r["task"]: {"compared": r["compared"], "agreed": r["agreed"] or 0} for r in rows}


def old_latencies(db, since, until):
    return list(
        db.query(
            "select task, served_by, latency_ms from requests where created_at >= ?"
            " and created_at < ? and status = 'ok' and served_by not in ('shadow', 'passthrough')"
            " and latency_ms is not null order by created_at desc",
            [since, until],
        )
    )


def old_list_tasks(db):
    return list(
        db.query(
            """
            select task, count(*) as requests, sum(served_by = 'teacher') as teacher,
                   sum(served_by = 'student') as student, sum(status = 'ok') as ok,
                   sum(status != 'ok') as failed, min(created_at) as first_at,
                   max(created_at) as last_at
            from requests where served_by != 'passthrough'
            group by task order by last_at desc
            """
        )
    )


def old_usage_since(db, since):
    rows = db.execute(
        "select api_key_id, sum(coalesce(total_tokens, 0)), sum(coalesce(teacher_cost_usd, 0))"
        " from requests where created_at >= ? and api_key_id is not null group by api_key_id",
        [since],
    ).fetchall()
    return {key: (int(tokens), float(usd)) for key, tokens, usd in rows}


# -- a mixed workload --------------------------------------------------------------------


def _request(rng: random.Random, i: int, at: float) -> dict[str, Any]:
    kind = rng.choice(
        ["teacher", "teacher", "student", "student", "deferred", "shadow", "failed", "passthrough"]
    )
    served_by = {"deferred": "teacher", "failed": "teacher"}.get(kind, kind)
    prompt, completion = rng.randint(5, 900), rng.randint(1, 300)
    record = RequestRecord(
        id=f"req_{i}",
        created_at=at,
        endpoint="embeddings" if kind == "passthrough" else rng.choice(["chat", "completions"]),
        task=rng.choice(TASKS),
        task_source="header",
        requested_model=rng.choice(MODELS),
        teacher_model=None if kind == "student" else rng.choice(MODELS),
        served_by=served_by,
        status=rng.choice(["error", "cut", "incomplete"]) if kind == "failed" else "ok",
        request_json="{}",
        latency_ms=None if rng.random() < 0.05 else rng.lognormvariate(5, 1.2),
        prompt_tokens=None if rng.random() < 0.05 else prompt,
        completion_tokens=None if kind == "passthrough" else completion,
        total_tokens=prompt + completion,
        api_key_id=rng.choice(KEYS),
        route_reason={"deferred": "deferred: low confidence", "shadow": "shadow of req_0"}.get(
            kind
        ),
        teacher_cost_usd=None if kind == "student" else rng.random() / 100,
        student_cost_usd=rng.random() / 1000 if kind in ("student", "deferred") else None,
        avoided_cost_usd=rng.random() / 100 if kind == "student" else None,
        saved_usd=rng.uniform(-0.01, 0.01),
        cost_estimated=1 if kind == "student" and rng.random() < 0.3 else None,
        bytes_in=rng.randint(10, 5000) if kind == "passthrough" else None,
        bytes_out=rng.randint(10, 5000) if kind == "passthrough" else None,
    )
    return record.as_row()


def _attempt(rng: random.Random, i: int, at: float) -> dict[str, Any]:
    kind = rng.choice(["shadow", "shadow", "failure", "audit"])
    return {
        "request_id": f"req_{i}",
        "created_at": at,
        "task": rng.choice(TASKS),
        "student_version": "v1",
        "kind": kind,
        "agreed": rng.choice([0, 1, None]) if kind != "failure" else None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
    }


def workload(
    n: int = 1500, seed: int = 3, start: float = T0 - 16 * HOUR
) -> tuple[list[dict], list[dict]]:
    """Rows over 40 hours from ``start`` (by default across midnight UTC): every kind of row."""
    rng = random.Random(seed)
    times = sorted(start + rng.random() * 40 * HOUR for _ in range(n))
    rows = [_request(rng, i, at) for i, at in enumerate(times)]
    attempts = [_attempt(rng, i, at) for i, at in enumerate(times) if rng.random() < 0.4]
    return rows, attempts


def log_workload(path: Address, start: float = T0 - 16 * HOUR) -> Address:
    """The workload written by the real log writer, a few ids sent twice."""
    rows, attempts = workload(start=start)
    writer = RequestLogWriter(path, commit_interval_ms=5, batch_size=97)
    writer.start()
    for row in rows:
        writer.submit("requests", row)
    for row in rows[:40]:  # the same rows again: the log keeps the first, counts it once
        writer.submit("requests", {**row, "total_tokens": 10**6, "served_by": "student"})
    for attempt in attempts:
        writer.submit("student_attempts", attempt)
    writer.close()
    assert writer.dropped == 0
    return path


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    return log_workload(tmp_path_factory.mktemp("rollups") / "u.db")


NOW = time.time()


@pytest.fixture(scope="module")
def recent(tmp_path_factory) -> Path:
    """The workload over the last 40 hours: its windows' ends are counted to the minute."""
    return log_workload(tmp_path_factory.mktemp("recent") / "u.db", start=NOW - 40 * HOUR)


def same(new: Any, old: Any) -> None:
    """Equal, floats to 1e-9 (sums of hours add in another order than sums of rows)."""
    if isinstance(old, dict):
        assert set(new) == set(old)
        for key in old:
            same(new[key], old[key])
    elif isinstance(old, list | tuple):
        assert len(new) == len(old)
        for a, b in zip(new, old, strict=True):
            same(a, b)
    elif isinstance(old, float) or isinstance(new, float):
        assert new == pytest.approx(old, rel=1e-9, abs=1e-12)
    else:
        assert new == old


WINDOWS = [
    (T0 - 16 * HOUR, T0 + 24 * HOUR),  # everything
    (T0 - 5 * HOUR, T0 + 3 * HOUR),  # across midnight
    (T0 + 7 * HOUR, T0 + 8 * HOUR),  # one hour
    (T0 + 30 * HOUR, T0 + 40 * HOUR),  # nothing logged
    (T0 - 24 * HOUR, T0 + 24 * HOUR),  # whole UTC days: day buckets from the daily sums
]


@pytest.mark.parametrize(("since", "until"), WINDOWS)
def test_every_report_gives_what_the_scan_of_requests_gave(logged, since, until):
    db = open_database(logged)
    assert db["requests"].count == 1500
    same(reports.cost_totals(db, since, until), old_cost_totals(db, since, until))
    for group in ("task", "day", "api_key"):
        same(reports.cost_by(db, group, since, until), old_cost_by(db, group, since, until))
    for bucket in (HOUR, 3 * HOUR, 86400):
        same(
            reports.cost_series(db, since, until, bucket),
            old_cost_series(db, since, until, bucket),
        )
    same(reports.passthrough_by_endpoint(db, since, until), old_passthrough(db, since, until))
    same(reports.live_agreement(db, since, until), old_live_agreement(db, since, until))
    same(usage_since(db, since), old_usage_since(db, since))
    same(list_tasks(db), old_list_tasks(db))


def _minutes(since: float, until: float) -> tuple[float, float]:
    return math.floor(since / 60) * 60.0, math.ceil(until / 60) * 60.0


@pytest.mark.parametrize(
    ("ago", "span"),
    [(40 * HOUR, 40 * HOUR), (29.3 * HOUR, 27.91 * HOUR), (5.21 * HOUR, 0.37 * HOUR), (0.1, 0.05)],
)
def test_a_recent_window_is_counted_to_the_minute(recent, ago, span):
    db = open_database(recent)
    since, until = NOW - ago + 7.5, NOW - ago + span
    whole = _minutes(since, until)
    same(reports.cost_totals(db, since, until), old_cost_totals(db, *whole))
    for group in ("task", "day", "api_key"):
        same(reports.cost_by(db, group, since, until), old_cost_by(db, group, *whole))
    same(reports.passthrough_by_endpoint(db, since, until), old_passthrough(db, *whole))
    for bucket in (60, 600):
        same(
            reports.cost_series(db, *whole, bucket),
            old_cost_series(db, *whole, bucket),
        )


def test_a_window_off_the_hour_counts_its_whole_hours(logged):
    db = open_database(logged)
    since, until = T0 - 5 * HOUR + 1234.5, T0 + 2 * HOUR + 17.0
    whole = (T0 - 5 * HOUR, T0 + 3 * HOUR)
    same(reports.cost_totals(db, since, until), old_cost_totals(db, *whole))
    same(reports.cost_by(db, "task", since, until), old_cost_by(db, "task", *whole))


@pytest.mark.parametrize(("since", "until"), WINDOWS[:3])
def test_latency_percentiles_come_from_buckets_within_ten_percent(logged, since, until):
    db = open_database(logged)
    exact: dict[tuple[str, str], list[float]] = {}
    for r in old_latencies(db, since, until):
        exact.setdefault((r["task"], r["served_by"]), []).append(r["latency_ms"])
    summary = {(r["task"], r["served_by"]): r for r in reports.latency_summary(db, since, until)}
    assert set(summary) == set(exact)
    checked = 0
    for group, values in exact.items():
        values.sort()
        row = summary[group]
        assert row["n"] == len(values)
        cuts = quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
        for p in (50, 95):
            rank = (len(values) - 1) * p / 100
            below = latency_bucket(values[int(rank)])
            above = latency_bucket(values[min(int(rank) + 1, len(values) - 1)])
            assert bucket_bounds(below)[0] <= row[f"p{p}"] <= bucket_bounds(above)[1]
            if below == above:  # the exact percentile and the estimate share a 10 % bucket
                assert row[f"p{p}"] == pytest.approx(cuts[p - 1], rel=0.1)
                checked += 1
    assert checked


def test_a_long_windows_percentiles_count_the_whole_utc_days_it_touches(logged):
    """A week or more: the daily buckets alone, the window widened to whole UTC days (here a
    week ending at 05:00 on the workload's second day also counts that day's later hours)."""
    db = open_database(logged)
    since, until = T0 + 5 * HOUR - 7 * 86400, T0 + 5 * HOUR
    counts: dict[tuple[str, str], int] = {}
    for r in old_latencies(db, T0 - 6 * 86400, T0 + 86400):  # the days it touches
        counts[(r["task"], r["served_by"])] = counts.get((r["task"], r["served_by"]), 0) + 1
    in_window = len(old_latencies(db, since, until))
    summary = reports.latency_summary(db, since, until)
    assert {(r["task"], r["served_by"]): r["n"] for r in summary} == counts
    assert sum(counts.values()) > in_window > 0


@contextmanager
def database_at(address: Address, migration: str) -> Iterator[Database]:
    """The database at ``address`` as a log of ``migration``'s release (opened with the
    migrations up to that one only), closed when the block ends."""
    names = [name for name, _ in migrations.MIGRATIONS]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[: names.index(migration) + 1])
        db = open_database(address)
    try:
        yield db
    finally:
        db.conn.close()


def copy_of(source: Path, path: Path) -> Database:
    """A copy of the SQLite log at ``source``, written to ``path`` and opened (the test may
    change it; the module's log stays as it is)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(path)
    src.backup(dst)
    src.close()
    dst.close()
    return open_database(path)


def test_rollups_outlive_the_rows_retention_prunes(logged, tmp_path):
    db = copy_of(logged, tmp_path / "pruned.db")
    window = (T0 - 16 * HOUR, T0 + 24 * HOUR)
    before = reports.cost_totals(db, *window), reports.cost_by(db, "task", *window)
    deleted = prune(db, T0)
    assert deleted["requests"] > 0 and old_cost_totals(db, *window)["requests"] < 1500
    same((reports.cost_totals(db, *window), reports.cost_by(db, "task", *window)), before)


def test_the_migration_fills_the_rollups_from_an_existing_log(tmp_path):
    """A database at 0007 with rows, migrated: the same report as the scan gave before."""
    path = tmp_path / "old.db"
    with database_at(path, "0007_security") as db:
        assert "rollup_requests" not in db.table_names()
        rows, attempts = workload(800, seed=11)
        db["requests"].insert_all(rows)
        db["student_attempts"].insert_all(attempts)
        window = (T0 - 16 * HOUR, T0 + 24 * HOUR)
        before = {
            "totals": old_cost_totals(db, *window),
            "days": old_cost_by(db, "day", *window),
            "keys": old_cost_by(db, "api_key", *window),
            "relayed": old_passthrough(db, *window),
            "agreement": old_live_agreement(db, *window),
            "tasks": old_list_tasks(db),
            "usage": old_usage_since(db, T0),
        }
    assert "0008_rollups" in Store(path).migrate()
    db = open_database(path)
    after = {
        "totals": reports.cost_totals(db, *window),
        "days": reports.cost_by(db, "day", *window),
        "keys": reports.cost_by(db, "api_key", *window),
        "relayed": reports.passthrough_by_endpoint(db, *window),
        "agreement": reports.live_agreement(db, *window),
        "tasks": list_tasks(db),
        "usage": usage_since(db, T0),
    }
    same(after, before)
    assert after["totals"]["requests"] > 500


def test_rows_written_outside_the_writer_add_to_the_rollups_once(tmp_path):
    db = open_database(tmp_path / "u.db")
    rows, _ = workload(50)
    write_rows(db, "requests", rows)
    write_rows(db, "requests", rows[:10])  # already logged: not counted again
    window = (T0 - 16 * HOUR, T0 + 24 * HOUR)
    same(reports.cost_totals(db, *window), old_cost_totals(db, *window))


_REQUESTS = re.compile(r"(?<![\w])requests\b")


def test_no_report_or_dashboard_query_reads_requests(logged, recent, monkeypatch, sql_statements):
    """EXPLAIN QUERY PLAN of every statement the report, the dashboard, ``understudy tasks``
    and the budgets run: none touches ``requests`` (scan or index search)."""
    from understudy.gateway.accounting.summary import summarize
    from understudy.gateway.api.dashboard.data import gather
    from understudy.settings import load_settings

    statements = sql_statements
    for path, now in ((logged, T0 + 24 * HOUR), (recent, NOW)):  # hours; minutes at the ends
        store = Store(path)
        for window in (600.0, 3600.0, 86400.0, 30 * 86400.0):
            gather(store, load_settings(env={}), window, now=now)
        with store.read() as db:
            summarize(db, window_s=30 * 86400, quality_target=0.9, student_free=True, now=now)
            list_tasks(db)
            usage_since(db, now - 86400)
    monkeypatch.undo()
    assert any("rollup_requests_minute" in s for s in statements)
    assert any("rollup_requests_daily" in s for s in statements)
    selects = {s for s in statements if s.lstrip().lower().startswith(("select", "with"))}
    assert sum("rollup_" in s for s in selects) >= 6
    db = open_database(logged)
    for sql in selects:
        plan = " | ".join(r[3] for r in db.execute(f"explain query plan {sql}").fetchall())
        assert not _REQUESTS.search(plan), f"{sql}\n  -> {plan}"


def _all_reports(db: Any, since: float, until: float) -> dict[str, Any]:
    return {
        "totals": reports.cost_totals(db, since, until),
        "by": [reports.cost_by(db, g, since, until) for g in ("task", "day", "api_key", "hour")],
        "series": reports.cost_series(db, since, until, HOUR),
        "relayed": reports.passthrough_by_endpoint(db, since, until),
        "agreement": reports.live_agreement(db, since, until),
        "latency": reports.latency_summary(db, since, until),
        "tasks": list_tasks(db),
        "usage": usage_since(db, since),
    }


def test_the_reports_read_the_same_on_both_engines(address, logged):
    """The same workload logged on SQLite and on PostgreSQL: the same numbers."""
    log_workload(address)
    window = (T0 - 16 * HOUR, T0 + 24 * HOUR)
    with Store(address).read() as db:
        got = _all_reports(db, *window)
    same(got, _all_reports(open_database(logged), *window))
    assert got["totals"]["requests"] > 1000


_ALL_NARROW = (*NARROW, (TASK_LATENCY, TASK_LATENCY_KEYS))
"""Every narrow twin of a wide rollup table and its keys."""


def _per_task(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Each narrow table (per task, per key, per task's latency buckets), and its wide twin
    summed by the narrow keys (the latency buckets: of the tasks' answers)."""
    columns = [*REQUEST_SUMS, "first_at", "last_at"]
    request_sums = ", ".join(
        f"{'min' if c == 'first_at' else 'max' if c == 'last_at' else 'sum'}({c}) as {c}"
        for c in columns
    )
    out = {}
    for twins, key_columns in _ALL_NARROW:
        keys = ", ".join(key_columns)
        latency = twins is TASK_LATENCY
        sums = "sum(n) as n" if latency else request_sums
        answers = "served_by not in ('shadow', 'passthrough')" if latency else "true"
        for wide, narrow in twins.items():
            for table, name, where in (
                (narrow, narrow, "true"),
                (wide, f"{wide} by {keys}", answers),
            ):
                out[name] = list(
                    db.query(
                        f"select {keys}, {sums} from {table} where {where}"
                        f" group by {keys} order by {keys}"
                    )
                )
    return out


def assert_per_task_sums_the_wide(db: Any) -> None:
    tables = _per_task(db)
    for twins, key_columns in _ALL_NARROW:
        for wide, narrow in twins.items():
            assert len(tables[narrow]) > 10
            same(tables[narrow], tables[f"{wide} by {', '.join(key_columns)}"])


def test_the_per_task_rollups_are_the_sums_of_the_wide_ones(address):
    """Written by the log writer (ids sent twice counted once), then after retention."""
    log_workload(address)
    with Store(address).read() as db:
        assert_per_task_sums_the_wide(db)
        before = _per_task(db)
    db = open_database(address)
    try:
        assert prune(db, T0)["requests"] > 0
        assert_per_task_sums_the_wide(db)
        same(_per_task(db), before)  # retention keeps every rollup
    finally:
        db.conn.close()


def test_the_migration_fills_the_per_task_rollups_from_the_wide_ones(tmp_path):
    """A log from before the per-task rollups: after the migration they sum the wide ones, and
    the report reads the same as the scan of the rows."""
    path = tmp_path / "old.db"
    with database_at(path, "0007_security") as db:
        rows, attempts = workload(800, seed=5)
        db["requests"].insert_all(rows)
        db["student_attempts"].insert_all(attempts)
    assert {"0014_task_rollups", "0014_key_rollups", "0017_task_latency"} <= set(
        Store(path).migrate()
    )
    db = open_database(path)
    assert_per_task_sums_the_wide(db)
    window = (T0 - 16 * HOUR, T0 + 24 * HOUR)
    same(reports.cost_totals(db, *window), old_cost_totals(db, *window))
    same(reports.cost_by(db, "day", *window), old_cost_by(db, "day", *window))
    same(reports.cost_by(db, "api_key", *window), old_cost_by(db, "api_key", *window))
    same(reports.passthrough_by_endpoint(db, *window), old_passthrough(db, *window))
