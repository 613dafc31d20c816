"""Aggregations for cost reports, the dashboard, ``understudy tasks`` and the budgets.

Every function here but the token-ratio ones reads the rollups the log writer keeps
(:mod:`storage.rollups`), never the ``requests`` rows, so a report costs the same at any log
size. A window ``[since, until)`` counts whole minutes when it starts in the last three days
(the span the per-minute sums are kept), else whole hours: from the start of the minute (or
hour) holding ``since`` to the end of the one holding the last instant before ``until``. Live
agreement and latency always count whole hours (latency whole UTC days in a window of a
week or more). Relayed calls
(``served_by = 'passthrough'``: embeddings, files, ...) have their own sums
(:func:`passthrough_by_endpoint`) and stay out of the tasks' (coverage, savings, latency).
No pricing logic here.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from understudy.storage.engine import Database, dialect
from understudy.storage.rollups import (
    DAILY,
    DAY_HOURS,
    HOUR_S,
    KEY_KEYS,
    KEYS,
    LATENCY_KEYS,
    MINUTE_S,
    MINUTES,
    MINUTES_KEPT_S,
    REQUEST_KEYS,
    REQUEST_SUMS,
    TASK_KEYS,
    TASK_LATENCY,
    TASK_LATENCY_KEYS,
    TASKS,
    bucket_bounds,
    day_start,
    hour_of,
    hours_changed,
)

GROUPS = {
    "task": "task",
    "api_key": "api_key_id",
    "hour": "hour",
    "day": "hour",
}
"""What :func:`cost_by` groups by: task, gateway key id (``-`` for none), UTC day
(``YYYY-MM-DD``) or hour (its start, seconds since the epoch)."""

_NOT_RELAYED = "served_by != 'passthrough'"

_TWINS = {
    "rollup_requests": (DAILY["rollup_requests"], MINUTES["rollup_requests"]),
    "rollup_latency": (DAILY["rollup_latency"], None),
    TASK_LATENCY["rollup_latency"]: (TASK_LATENCY[DAILY["rollup_latency"]], None),
    TASKS["rollup_requests"]: (TASKS[DAILY["rollup_requests"]], MINUTES["rollup_requests"]),
    KEYS["rollup_requests"]: (KEYS[DAILY["rollup_requests"]], MINUTES["rollup_requests"]),
}
"""Each hourly table a window reads: its daily twin and the per-minute table of its sums."""
_TASKS = TASKS["rollup_requests"]
_KEYS = KEYS["rollup_requests"]
_REQUEST_TABLES = {"rollup_requests": REQUEST_KEYS, _TASKS: TASK_KEYS, _KEYS: KEY_KEYS}
"""The request tables a window reads and their keys."""
_LATENCY = TASK_LATENCY["rollup_latency"]
_LATENCY_TABLES = {"rollup_latency": LATENCY_KEYS, _LATENCY: TASK_LATENCY_KEYS}
"""The latency tables a window reads and their keys."""
LATENCY_DAYS_FROM_S = 7 * DAY_HOURS * HOUR_S
"""Latency percentiles of a window this long or longer count the whole UTC days it touches
(the daily buckets alone), not its hours at the ends."""

_SUMS = """
    sum(case when served_by != 'shadow' then calls else 0 end) as requests,
    sum(case when served_by = 'student' then calls else 0 end) as student,
    sum(case when served_by = 'teacher' then calls else 0 end) as teacher,
    sum(case when served_by = 'shadow' then calls else 0 end) as shadow_calls,
    sum(deferred) as deferred,
    sum(case when served_by != 'shadow' then errors else 0 end) as failed,
    coalesce(sum(prompt_tokens), 0) as prompt_tokens,
    coalesce(sum(completion_tokens), 0) as completion_tokens,
    coalesce(sum(teacher_cost_usd), 0.0) as teacher_spend_usd,
    coalesce(sum(case when served_by = 'shadow' then teacher_cost_usd else 0.0 end), 0.0)
        as shadow_spend_usd,
    coalesce(sum(avoided_cost_usd), 0.0) as avoided_usd,
    coalesce(sum(student_cost_usd), 0.0) as student_cost_usd,
    coalesce(sum(saved_usd), 0.0) as saved_usd,
    coalesce(sum(estimated), 0) as estimated,
    min(first_at) as first_at,
    max(last_at) as last_at
"""

_ADDED = (
    "requests",
    "student",
    "teacher",
    "shadow_calls",
    "deferred",
    "failed",
    "prompt_tokens",
    "completion_tokens",
    "teacher_spend_usd",
    "shadow_spend_usd",
    "avoided_usd",
    "student_cost_usd",
    "saved_usd",
    "estimated",
)


def hours(since: float, until: float) -> tuple[int, int]:
    """The hours ``[first, end)`` a window ``[since, until)`` counts."""
    return math.floor(since / HOUR_S), math.ceil(until / HOUR_S)


def window(
    table: str,
    since: float,
    until: float,
    *,
    daily: bool = True,
    fine: bool = False,
    now: float | None = None,
) -> tuple[str, list[int]]:
    """The rows of a rollup ``table`` in the window, as a subquery (``from`` it) and its
    parameters. A window's ends are counted to the minute from the per-minute table while they
    are in the span it keeps (else widened to whole hours); whole UTC days inside come from the
    daily twin (when ``daily``), the other whole hours from the hourly table; with ``fine``,
    every minute from the per-minute table while the window is in its span. Rows of
    the request tables carry ``minute``, the first minute they count."""
    arms = _arms(table, since, until, daily=daily, fine=fine, now=now)
    sql = " union all ".join(arm for arm, _ in arms)
    return f"({sql}) as r", [p for _, params in arms for p in params]


def _arms(
    table: str, since: float, until: float, *, daily: bool, fine: bool, now: float | None
) -> list[tuple[str, list[int]]]:
    """The parts of :func:`window`: each a ``select`` and its parameters."""
    arms: list[tuple[str, list[int]]] = []
    first, end = hours(since, until)
    twin, minutes = _TWINS[table]
    kept_from = (time.time() if now is None else now) - MINUTES_KEPT_S
    if minutes is not None and since >= kept_from:
        m0, m1 = math.floor(since / MINUTE_S), math.ceil(until / MINUTE_S)
        first, end = -(-m0 // 60), m1 // 60  # the whole hours inside
        if first >= end or fine:
            first = end
            arms.append((_arm(table, minutes), _minute_span(m0, m1)))
        else:
            arms += [
                (_arm(table, minutes), _minute_span(m0, first * 60)),
                (_arm(table, minutes), _minute_span(end * 60, m1)),
            ]
    if first < end:
        day0 = -(-first // DAY_HOURS) * DAY_HOURS  # the first whole day
        day1 = end // DAY_HOURS * DAY_HOURS  # the end of the last whole day
        if daily and twin is not None and day0 < day1:
            arms.append((_arm(table, twin), [day0, day1]))
            ends = ([first, day0], [day1, end])
            arms += [(_arm(table, table), span) for span in ends if span[0] < span[1]]
        else:
            arms.append((_arm(table, table), [first, end]))
    return arms


CLOSED_KEPT = 64
"""Most results of closed hours a process keeps (the least recently used go first)."""
_closed: OrderedDict[tuple[Any, ...], dict[tuple[Any, ...], Any]] = OrderedDict()
_closed_lock = threading.Lock()


def _summed(
    db: Database,
    sql: str,
    table: str,
    since: float,
    until: float,
    *,
    keys: Sequence[str],
    lead: Sequence[Any] = (),
    daily: bool = True,
    fine: bool = False,
) -> list[dict[str, Any]]:
    """The rows of ``sql`` (sums, ``min(first_at)`` and ``max(last_at)`` grouped by ``keys``;
    ``{src}`` where the window's rows go, after parameters ``lead``) over ``table``'s rows in
    the window. The window's hours and days before the current hour are read together once
    an hour per process and kept (:data:`CLOSED_KEPT` results), with the count, calls and
    stamps of those hours in ``rollup_hours``: a later read reuses them while those are
    unchanged (a closed hour changes only when a late row of it is logged; retention keeps
    the rollups); the current hour is read and added to them (today's part of a daily arm:
    from the hourly table). A report of the last 30 days reads the current hour's rows, not
    the month's."""
    now = time.time()
    current = hour_of(now)
    arms = _arms(table, since, until, daily=daily, fine=fine, now=now)
    closed, live = _split(arms, _arm(table, table), current)
    if not closed:
        return _query(db, sql, live, lead)
    changes = hours_changed(db.conn, min(p[0] for _, p in closed), current)
    if not changes[0]:  # no hour of the span was logged: nothing to keep
        return _query(db, sql, closed + live, lead)
    kept = _kept(db, sql, closed, lead, keys, changes)
    if not live:
        return list(kept.values())
    out = dict(kept)  # the kept rows themselves are never changed
    ordered = True
    for row in _query(db, sql, live, lead):
        key = tuple(row[k] for k in keys)
        acc = out.get(key)
        if acc is None:
            out[key] = row
            ordered = False
        else:
            out[key] = _added(acc, row, keys)
    return list(out.values()) if ordered else [out[k] for k in sorted(out)]


def _split(
    arms: list[tuple[str, list[int]]], hourly: str, current: int
) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """The arms' spans before the ``current`` hour, and the rest (per-minute arms too). A
    daily arm's part from today on is read from the ``hourly`` table."""
    today = day_start(current)
    closed: list[tuple[str, list[int]]] = []
    live: list[tuple[str, list[int]]] = []
    for arm, params in arms:
        if len(params) != 2:  # per-minute arms
            live.append((arm, params))
            continue
        first, end = params
        if arm != hourly and end > today:  # today's part of the daily sums: its hours
            if first < today:
                closed.append((arm, [first, today]))
            arm, first = hourly, max(first, today)
        if first < min(end, current):
            closed.append((arm, [first, min(end, current)]))
        if end > current:
            live.append((arm, [max(first, current), end]))
    return closed, live


def _query(
    db: Database, sql: str, arms: list[tuple[str, list[int]]], lead: Sequence[Any]
) -> list[dict[str, Any]]:
    src = "(" + " union all ".join(arm for arm, _ in arms) + ") as r"
    params = [*lead, *(p for _, ps in arms for p in ps)]
    return list(db.query(sql.format(src=src), params))


def _kept(
    db: Database,
    sql: str,
    arms: list[tuple[str, list[int]]],
    lead: Sequence[Any],
    keys: Sequence[str],
    changes: tuple[int, int, int],
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rows of ``sql`` over the closed arms, by their keys (in key order): kept, or read
    and kept."""
    spans = tuple((arm, tuple(params)) for arm, params in arms)
    key = (_identity(db), sql, spans, tuple(lead), changes)
    with _closed_lock:
        rows = _closed.get(key)
        if rows is not None:
            _closed.move_to_end(key)
            return rows
    rows = {tuple(row[k] for k in keys): row for row in _query(db, sql, arms, lead)}
    with _closed_lock:
        _closed[key] = rows
        while len(_closed) > CLOSED_KEPT:
            _closed.popitem(last=False)
    return rows


def _identity(db: Database) -> tuple[str, str]:
    """Which database: SQLite's file, PostgreSQL's database and server."""
    if dialect(db) == "postgresql":
        (row,) = db.query(
            "select current_database() as name, coalesce(host(inet_server_addr()), '')"
            " || ':' || coalesce(inet_server_port(), 0) as server"
        )
        return str(row["server"]), str(row["name"])
    return "sqlite", str(db.conn.execute("pragma database_list").fetchone()[2])


def _added(acc: dict[str, Any], row: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Two rows of the same keys added into a new one (``first_at`` the least, ``last_at`` the
    most; a sum of no rows, ``None``, adds nothing)."""
    out = dict(acc)
    for column, value in row.items():
        old = out[column]
        if value is None or column in keys:
            continue
        if old is None:
            out[column] = value
        elif column == "first_at":
            out[column] = min(old, value)
        elif column == "last_at":
            out[column] = max(old, value)
        else:
            out[column] = old + value
    return out


def _minute_span(m0: int, m1: int) -> list[int]:
    """The parameters of a per-minute arm: its hours (the table's key starts with the hour),
    then its minutes."""
    return [m0 // 60, -(-m1 // 60), m0, m1]


def _arm(table: str, source: str) -> str:
    """One part of a window: ``source``'s rows (of ``table``'s columns) in a span."""
    if table in _REQUEST_TABLES:
        keys = _REQUEST_TABLES[table]
        columns = ", ".join((*keys, *REQUEST_SUMS, "first_at", "last_at"))
        if source == MINUTES["rollup_requests"]:
            return (
                f"select {columns}, minute from {source} where hour >= ? and hour < ?"
                " and minute >= ? and minute < ?"
            )
        return f"select {columns}, hour * 60 as minute from {source} where hour >= ? and hour < ?"
    columns = ", ".join((*_LATENCY_TABLES[table], "n"))
    return f"select {columns} from {source} where hour >= ? and hour < ?"


def cost_totals(db: Database, since: float, until: float) -> dict[str, Any]:
    """One row of sums over every request in the window."""
    (row,) = _summed(
        db, f"select {_SUMS} from {{src}} where {_NOT_RELAYED}", _TASKS, since, until, keys=()
    )
    return _clean(row)


def cost_by(db: Database, group: str, since: float, until: float) -> list[dict[str, Any]]:
    """Sums per ``task``, ``api_key`` (its non-secret id; ``-`` for none), ``day`` (UTC,
    ``YYYY-MM-DD``) or ``hour`` (its start in seconds) in the window, ordered by key."""
    column = GROUPS[group]
    table = _KEYS if group == "api_key" else _TASKS
    rows = _summed(
        db,
        f"select {column} as key, {_SUMS} from {{src}} where {_NOT_RELAYED}"
        f" group by {column} order by {column}",
        table,
        since,
        until,
        keys=("key",),
        daily=group != "hour",
    )
    if group == "api_key":
        return [_clean({**r, "key": r["key"] or "-"}) for r in rows]
    if group == "hour":
        return [_clean({**r, "key": r["key"] * HOUR_S}) for r in rows]
    if group == "day":
        return _merged((_day(r["key"]), r) for r in rows)
    return [_clean(r) for r in rows]


def cost_series(
    db: Database,
    since: float,
    until: float,
    bucket_s: float,
    *,
    own: Sequence[str] | None = None,
    rest: str = "",
    anchor: float | None = None,
) -> list[dict[str, Any]]:
    """Per task and time bucket: requests, student-served, saved. Buckets are ``bucket_s``
    long from ``anchor`` (default ``since``; ``0`` with day buckets: whole UTC days, read from
    the daily sums), the first one starting at ``since``: ``bucket`` is a bucket's index from
    the first, ``start`` its start. Buckets shorter than an hour are filled minute by minute
    in the span the per-minute sums are kept; others from whole hours (an hour's sums in the
    bucket holding its start). With ``own``, only those tasks keep their name: the others' sums
    come as one task named ``rest``."""
    anchor = since if anchor is None else anchor
    day = DAY_HOURS * HOUR_S
    daily = bucket_s % day == 0 and anchor % day == 0
    name, lead = "task", list[Any]()
    if own is not None:
        marks = ", ".join("?" for _ in own) or "null"
        name = f"case when task in ({marks}) then task else ? end"
        lead = [*own, rest]
    rows = _summed(
        db,
        f"select {name} as task, minute,"
        " sum(case when served_by != 'shadow' then calls else 0 end) as requests,"
        " sum(case when served_by = 'student' then calls else 0 end) as student,"
        " coalesce(sum(saved_usd), 0.0) as saved_usd from {src}"
        f" where {_NOT_RELAYED} group by 1, minute order by 1, minute",
        _TASKS,
        since,
        until,
        keys=("task", "minute"),
        lead=lead,
        daily=daily,
        fine=bucket_s < HOUR_S,
    )
    first = math.floor((since - anchor) / bucket_s)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        index = max(0, math.floor((r["minute"] * MINUTE_S - anchor) / bucket_s) - first)
        acc = out.setdefault(
            (r["task"], index),
            {"task": r["task"], "requests": 0, "student": 0, "saved_usd": 0.0},
        )
        acc["requests"] += r["requests"]
        acc["student"] += r["student"]
        acc["saved_usd"] += r["saved_usd"]
    return [
        {**v, "bucket": i, "start": max(since, anchor + (first + i) * bucket_s)}
        for (_, i), v in sorted(out.items())
    ]


def passthrough_by_endpoint(db: Database, since: float, until: float) -> list[dict[str, Any]]:
    """Relayed calls per endpoint family in the window: calls, failures, body bytes each way,
    tokens and teacher spend (where the answers carried usage), mean latency."""
    rows = _summed(
        db,
        "select endpoint, sum(calls) as requests, sum(errors) as failed,"
        " sum(bytes_in) as bytes_in, sum(bytes_out) as bytes_out, sum(total_tokens) as tokens,"
        " sum(teacher_cost_usd) as teacher_spend_usd, sum(latency_ms_sum) as latency_sum,"
        " sum(latency_n) as latency_n from {src} where served_by = 'passthrough'"
        " group by endpoint order by endpoint",
        _KEYS,
        since,
        until,
        keys=("endpoint",),
    )
    out = []
    for r in rows:  # new rows: the kept ones stay as read
        row = {k: v for k, v in r.items() if k not in ("latency_n", "latency_sum")}
        n, total = r["latency_n"], r["latency_sum"]
        out.append({**row, "mean_latency_ms": total / n if n else None})
    return out


def live_agreement(db: Database, since: float, until: float) -> dict[str, Any]:
    """Per task: shadow comparisons in the window and how many agreed."""
    rows = db.query(
        "select task, sum(compared) as compared, sum(agreed) as agreed from rollup_agreement"
        " where hour >= ? and hour < ? group by task having sum(compared) > 0",
        hours(since, until),
    )
    return {r["task"]: {"compared": r["compared"], "agreed": r["agreed"] or 0} for r in rows}


def latency_summary(
    db: Database, since: float, until: float, percents: Iterable[int] = (50, 95)
) -> list[dict[str, Any]]:
    """Per task and ``served_by`` (student or teacher answers that completed): how many, and
    each percentile (``p50``, ``p95``, ...) read from the latency buckets (within 10 %). A
    window of :data:`LATENCY_DAYS_FROM_S` or more counts the whole UTC days it touches, read
    from the daily buckets only (a 30-day window: 31 rows per bucket, not 29 and 48 hours)."""
    if until - since >= LATENCY_DAYS_FROM_S:
        day = DAY_HOURS * HOUR_S
        since, until = since // day * day, -(-until // day) * day
    rows = _summed(
        db,
        "select task, served_by, bucket, sum(n) as n from {src}"
        " where served_by not in ('shadow', 'passthrough')"
        " group by task, served_by, bucket order by task, served_by, bucket",
        _LATENCY,
        since,
        until,
        keys=("task", "served_by", "bucket"),
    )
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["served_by"]), []).append((r["bucket"], r["n"]))
    out = []
    for (task, served_by), counts in groups.items():
        n = sum(c for _, c in counts)
        row: dict[str, Any] = {"task": task, "served_by": served_by, "n": n}
        for p in percents:
            row[f"p{p}"] = _value_at(counts, (n - 1) * p / 100)
        out.append(row)
    return out


def task_list(db: Database) -> list[dict[str, Any]]:
    """Every task with its logged calls (shadow calls included), teacher- and student-served,
    ok and failed, first and last call; most recent activity first."""
    return list(
        db.query(
            "select task, sum(calls) as requests,"
            " sum(case when served_by = 'teacher' then calls else 0 end) as teacher,"
            " sum(case when served_by = 'student' then calls else 0 end) as student,"
            " sum(calls - errors) as ok, sum(errors) as failed,"
            " min(first_at) as first_at, max(last_at) as last_at"
            f" from {TASKS[DAILY['rollup_requests']]} where {_NOT_RELAYED}"
            " group by task order by last_at desc"
        )
    )


def log_totals(db: Database, from_hour: int) -> list[dict[str, Any]]:
    """Per hour (from ``from_hour`` on), task and ``served_by``: calls, errors, teacher spend
    and savings (``/metrics``' totals of every process). Whole UTC days that ended before the
    hour before the current one come as one row a day (``hour``: the day's first), from the
    daily sums: a process's first scrape of a month's log reads ~30 rows per group, not ~720."""
    sums = (
        "select hour, task, served_by, sum(calls) as calls, sum(errors) as errors,"
        " sum(teacher_cost_usd) as teacher_cost_usd, sum(saved_usd) as saved_usd from {table}"
        " where hour >= ? and hour < ? group by hour, task, served_by"
    )
    day0 = -(-from_hour // DAY_HOURS) * DAY_HOURS  # the first whole day
    day1 = day_start(hour_of(time.time()) - 1)  # the day the open hours are in
    end = 2**31 - 1
    if day0 >= day1:
        return list(db.query(sums.format(table=_TASKS), [from_hour, end]))
    parts = (
        (_TASKS, [from_hour, day0]),
        (TASKS[DAILY["rollup_requests"]], [day0, day1]),
        (_TASKS, [day1, end]),
    )
    return [row for table, span in parts for row in db.query(sums.format(table=table), span)]


def _value_at(counts: list[tuple[int, int]], rank: float) -> float:
    """The latency at a (fractional, 0-based) rank, the values of a bucket spread evenly
    over it."""
    seen = 0
    for bucket, n in counts:
        if rank < seen + n or bucket == counts[-1][0]:
            low, high = bucket_bounds(bucket)
            share = min(1.0, max(0.0, (rank - seen + 0.5) / n))
            return low + (high - low) * share
        seen += n
    return 0.0


def _day(hour: int) -> str:
    return dt.datetime.fromtimestamp(hour * HOUR_S, dt.UTC).date().isoformat()


def _merged(keyed: Iterable[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of one key added together (hours into days), in key order."""
    out: dict[Any, dict[str, Any]] = {}
    for key, row in keyed:
        acc = out.get(key)
        if acc is None:
            out[key] = {**row, "key": key}
            continue
        for column in _ADDED:
            acc[column] = (acc[column] or 0) + (row[column] or 0)
        acc["first_at"] = min(acc["first_at"], row["first_at"])
        acc["last_at"] = max(acc["last_at"], row["last_at"])
    return [_clean(out[k]) for k in sorted(out)]


def token_ratio_sums(db: Database, since: float) -> dict[str, dict[str, Any]]:
    """Per task, token sums of (student attempt, teacher answer) pairs of the same request
    since the hour holding ``since``: deferrals and shadow-mode attempts (the teacher served
    the request itself) and sampled shadow calls (a ``shadow`` row naming the student-served
    request); from ``rollup_token_pairs``, a row per hour and task."""
    rows = db.query(
        "select task, sum(pairs) as pairs, sum(tp) as tp, sum(tc) as tc, sum(sp) as sp,"
        " sum(sc) as sc from rollup_token_pairs where hour >= ? group by task"
        " having sum(pairs) > 0",
        [hour_of(since)],
    )
    return {r["task"]: {k: int(v) if k != "task" else v for k, v in r.items()} for r in rows}


def teacher_token_means(db: Database, since: float) -> dict[str, dict[str, Any]]:
    """Per task, the mean prompt and completion tokens of its teacher answers since the hour
    holding ``since`` (served or shadow, ``ok``, both counts known): what a student answer of
    the task is worth before its token ratio is learned; from ``rollup_token_pairs``."""
    rows = db.query(
        "select task, sum(answers) as answers, sum(answer_prompt) as prompt,"
        " sum(answer_completion) as completion from rollup_token_pairs where hour >= ?"
        " group by task having sum(answers) > 0",
        [hour_of(since)],
    )
    return {
        r["task"]: {
            "task": r["task"],
            "answers": int(r["answers"]),
            "prompt": int(r["prompt"]) / int(r["answers"]),
            "completion": int(r["completion"]) / int(r["answers"]),
        }
        for r in rows
    }


def latest_teacher_models(db: Database, since: float) -> dict[str, str]:
    """Per task, the teacher model named in its most recent teacher answer (served or shadow),
    if that was at or after ``since``; from ``rollup_teacher_models``, a row per task."""
    rows = db.query("select task, model from rollup_teacher_models where at >= ?", [since])
    return {r["task"]: r["model"] for r in rows}


def distill_run_counts(db: Database) -> list[dict[str, Any]]:
    """Distillation runs per task and outcome (promoted, rejected, failed, skipped, running)."""
    return list(
        db.query(
            "select task, case when promoted != 0 then 'promoted'"
            " when status = 'succeeded' then 'rejected' else status end as outcome,"
            " count(*) as runs from distill_runs group by task, outcome"
        )
    )


def last_distill_success(db: Database) -> dict[str, float]:
    """Per task, when its last run that finished without error ended (succeeded = trained and
    judged, promoted or not)."""
    rows = db.query(
        "select task, max(finished_at) as at from distill_runs where status = 'succeeded'"
        " and finished_at is not null group by task"
    )
    return {r["task"]: r["at"] for r in rows}


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("requests", "student", "teacher", "shadow_calls", "deferred", "failed"):
        out[key] = int(out.get(key) or 0)
    return out
