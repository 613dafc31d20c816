"""Hourly rollups of the request log, written in the same transaction as the rows they count.

Three tables, one row per hour and group (``hour`` is ``floor(created_at / 3600)``, computed
here, never in SQL):

* ``rollup_requests``: per hour x task x endpoint family x ``served_by`` x gateway key id x
  model (the teacher model, else the one requested; ``''`` when a value is missing): calls,
  errors (status not ``ok``), deferrals, tokens, the cost columns, estimated savings, body bytes,
  latency sum and count, and the first and last ``created_at``.
* ``rollup_latency``: per hour x task x endpoint x ``served_by``, how many answered (``ok``)
  calls fell in each latency bucket (:func:`latency_bucket`: 10 % wide), so percentiles come
  from the buckets.
* ``rollup_agreement``: per hour x task, shadow comparisons and how many agreed (the live
  agreement).

``rollup_requests_daily`` and ``rollup_latency_daily`` hold the same sums per UTC day (their
``hour`` is the day's first hour), so a month's report reads ~30 rows per group, not ~720.
``rollup_tasks`` and ``rollup_tasks_daily`` hold ``rollup_requests``' sums per hour (or day) x
task x ``served_by`` only: what the headline, the per-task and per-day figures and the
dashboard's charts read, a few times fewer rows than the wide table (one per key and model
and endpoint). ``rollup_keys`` and ``rollup_keys_daily`` hold them per hour (or day) x gateway
key id x endpoint family x ``served_by``: the per-key figures and the relayed calls.
``rollup_task_latency`` and ``rollup_task_latency_daily`` hold ``rollup_latency``'s buckets per
hour (or day) x task x ``served_by`` of the tasks' answers only (student or teacher; shadow
checks and relayed calls, which no percentile reads, left out), with an index that covers
them: what the latency percentiles read.
``rollup_requests_minute`` holds the request sums per minute for the last
:data:`MINUTES_KEPT_S` only (older minutes are deleted as the log writes): a recent window
is counted to the minute at its ends, and charts of a short window have a point a minute.
``rollup_token_pairs`` (per hour x task: teacher answers' tokens and (student attempt, teacher
answer) token pairs) and ``rollup_teacher_models`` (per task, its latest teacher model) are what
the gateway's cost book learns token ratios from (:func:`add_token_pairs`). ``rollup_hours``
(per hour: request rows and a stamp each write changes) tells a reader whether hours it has
read since changed (:func:`hours_changed`).

Every report, the dashboard, ``understudy tasks``, the budgets and ``/metrics`` read these
instead of ``requests``. Only the log writer adds to them (:func:`record`), counting each row
the insert really stored (a row whose id is already logged is not counted twice); the
migration that creates them fills them from the existing log (:func:`backfill`). Nothing else
that touches logged rows changes a count: marking a Responses row deleted does not, feedback is
not counted, and retention deletes old rows but keeps their rollups, so the history of costs and
savings outlives the bodies.

Every statement here runs on SQLite and PostgreSQL: ``?`` placeholders and
``INSERT ... ON CONFLICT (...) DO UPDATE``.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any

HOUR_S = 3600
LATENCY_BASE = 1.1
"""Each latency bucket's upper bound is 10 % above the one below."""
LATENCY_TOP = 250
"""The last bucket: everything above ``LATENCY_BASE ** (LATENCY_TOP - 1)`` ms (~5 days)."""

REQUEST_KEYS = ("hour", "task", "endpoint", "served_by", "api_key_id", "model")
REQUEST_SUMS = (
    "calls",
    "errors",
    "deferred",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "teacher_cost_usd",
    "student_cost_usd",
    "avoided_cost_usd",
    "saved_usd",
    "estimated",
    "bytes_in",
    "bytes_out",
    "latency_ms_sum",
    "latency_n",
)
LATENCY_KEYS = ("hour", "task", "endpoint", "served_by", "bucket")
AGREEMENT_KEYS = ("hour", "task")

DDL = (
    """
    create table rollup_requests (
        hour integer not null,
        task text not null,
        endpoint text not null,
        served_by text not null,
        api_key_id text not null,
        model text not null,
        calls integer not null default 0,
        errors integer not null default 0,
        deferred integer not null default 0,
        prompt_tokens bigint not null default 0,
        completion_tokens bigint not null default 0,
        total_tokens bigint not null default 0,
        teacher_cost_usd double precision not null default 0,
        student_cost_usd double precision not null default 0,
        avoided_cost_usd double precision not null default 0,
        saved_usd double precision not null default 0,
        estimated integer not null default 0,
        bytes_in bigint not null default 0,
        bytes_out bigint not null default 0,
        latency_ms_sum double precision not null default 0,
        latency_n integer not null default 0,
        first_at double precision not null,
        last_at double precision not null,
        primary key (hour, task, endpoint, served_by, api_key_id, model)
    )
    """,
    "create index rollup_requests_key on rollup_requests (api_key_id, hour)",
    """
    create table rollup_latency (
        hour integer not null,
        task text not null,
        endpoint text not null,
        served_by text not null,
        bucket integer not null,
        n integer not null default 0,
        primary key (hour, task, endpoint, served_by, bucket)
    )
    """,
    """
    create table rollup_agreement (
        hour integer not null,
        task text not null,
        compared integer not null default 0,
        agreed integer not null default 0,
        primary key (hour, task)
    )
    """,
)

DAY_HOURS = 24
DAILY = {"rollup_requests": "rollup_requests_daily", "rollup_latency": "rollup_latency_daily"}
"""Each hourly table and its daily twin."""
DAILY_DDL = (
    DDL[0].replace("rollup_requests (", "rollup_requests_daily (", 1),
    DDL[2].replace("rollup_latency (", "rollup_latency_daily (", 1),
)

MINUTE_S = 60
MINUTES_KEPT_S = 3 * 86400
"""How long the per-minute request sums are kept."""
MINUTES = {"rollup_requests": "rollup_requests_minute"}
"""The hourly table that has a per-minute twin."""
MINUTE_KEYS = ("hour", "minute", *REQUEST_KEYS[1:])
MINUTE_DDL = (
    DDL[0]
    .replace("rollup_requests (", "rollup_requests_minute (\n        minute integer not null,", 1)
    .replace("primary key (hour,", "primary key (hour, minute,", 1),
)

TASKS = {"rollup_requests": "rollup_tasks", "rollup_requests_daily": "rollup_tasks_daily"}
"""Each wide request table and its narrow per-task twin."""
TASK_KEYS = ("hour", "task", "served_by")
KEYS = {"rollup_requests": "rollup_keys", "rollup_requests_daily": "rollup_keys_daily"}
"""Each wide request table and its narrow per-key twin."""
KEY_KEYS = ("hour", "api_key_id", "endpoint", "served_by")
NARROW = ((TASKS, TASK_KEYS), (KEYS, KEY_KEYS))
"""The narrow twins of the wide request tables and their keys."""
TASK_LATENCY = {
    "rollup_latency": "rollup_task_latency",
    "rollup_latency_daily": "rollup_task_latency_daily",
}
"""Each wide latency table and its narrow per-task twin."""
TASK_LATENCY_KEYS = ("hour", "task", "served_by", "bucket")
LATENCY_LEFT_OUT = ("shadow", "passthrough")
"""The ``served_by`` values the per-task latency tables leave out: no percentile reads them."""


def _narrow_ddl(table: str, keys: tuple[str, ...]) -> str:
    """``rollup_requests``' DDL for a narrow twin: only ``keys`` of its key columns."""
    dropped = [[c] for c in REQUEST_KEYS if c not in keys]
    wide = DDL[0].replace("rollup_requests (", f"{table} (", 1)
    lines = (line for line in wide.splitlines() if line.split()[:1] not in dropped)
    return "\n".join(lines).replace(
        f"primary key ({', '.join(REQUEST_KEYS)})", f"primary key ({', '.join(keys)})"
    )


TASKS_DDL = tuple(_narrow_ddl(table, TASK_KEYS) for table in TASKS.values())
KEYS_DDL = tuple(_narrow_ddl(table, KEY_KEYS) for table in KEYS.values())
TASK_LATENCY_DDL = tuple(
    DDL[2]
    .replace("rollup_latency (", f"{table} (", 1)
    .replace("        endpoint text not null,\n", "", 1)
    .replace(
        f"primary key ({', '.join(LATENCY_KEYS)})", f"primary key ({', '.join(TASK_LATENCY_KEYS)})"
    )
    for table in TASK_LATENCY.values()
) + tuple(  # the percentiles' reads never look up the table's rows
    f"create index {table}_read on {table} ({', '.join(TASK_LATENCY_KEYS)}, n)"
    for table in TASK_LATENCY.values()
)
HOURS = "rollup_hours"
"""Per hour: every request row logged (``calls``) and ``stamp``, a random number the last
write to the hour set. Whether a span of hours changed since a read is two sums over at most a
row an hour (:func:`hours_changed`): what lets a reader keep the sums of the closed hours and
days it has read (:mod:`storage.reports`)."""
HOURS_DDL = f"""
    create table {HOURS} (
        hour integer primary key,
        calls bigint not null default 0,
        stamp bigint not null default 0
    )
"""
TABLES = (
    "rollup_requests",
    "rollup_latency",
    "rollup_agreement",
    *DAILY.values(),
    *MINUTES.values(),
    *TASKS.values(),
    *KEYS.values(),
    *TASK_LATENCY.values(),
    "rollup_token_pairs",
    "rollup_teacher_models",
    HOURS,
)
"""Every rollup table."""

TOKEN_KEYS = ("hour", "task")
TOKEN_SUMS = ("answers", "answer_prompt", "answer_completion", "pairs", "tp", "tc", "sp", "sc")
TOKEN_DDL = (
    """
    create table rollup_token_pairs (
        hour integer not null,
        task text not null,
        answers integer not null default 0,
        answer_prompt bigint not null default 0,
        answer_completion bigint not null default 0,
        pairs integer not null default 0,
        tp bigint not null default 0,
        tc bigint not null default 0,
        sp bigint not null default 0,
        sc bigint not null default 0,
        primary key (hour, task)
    )
    """,
    """
    create table rollup_teacher_models (
        task text primary key,
        model text not null,
        at double precision not null
    )
    """,
)
"""What the cost book learns a task's token ratio and teacher model from (see
:func:`add_token_pairs`)."""

_REQUIRED = ("id", "created_at", "endpoint", "task", "task_source", "served_by", "status")
_ATTEMPT_REQUIRED = ("request_id", "created_at", "task", "student_version", "kind")
_CHUNK = 500


def hour_of(ts: float) -> int:
    """The hour a timestamp falls in (hours since the epoch, UTC)."""
    return math.floor(ts / HOUR_S)


def latency_bucket(ms: float) -> int:
    """The bucket of a latency: 0 holds up to 1 ms, bucket ``i`` up to ``1.1 ** i`` ms."""
    if ms <= 1.0:
        return 0
    return min(LATENCY_TOP, max(1, math.ceil(math.log(ms) / math.log(LATENCY_BASE))))


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """``(lower, upper)`` ms of a latency bucket (the top one's upper bound is its lower x 1.1)."""
    upper = LATENCY_BASE**bucket
    return (0.0 if bucket == 0 else LATENCY_BASE ** (bucket - 1)), upper


def day_start(hour: int) -> int:
    """The first hour of the UTC day holding ``hour``."""
    return hour // DAY_HOURS * DAY_HOURS


def create(conn: Any) -> None:
    """Create the hourly rollup tables (the migration calls this, then :func:`backfill`)."""
    for statement in DDL:
        conn.execute(statement)


def create_minutes(conn: Any) -> None:
    """Create the per-minute table (the migration calls this, then :func:`fill_minutes`)."""
    for statement in MINUTE_DDL:
        conn.execute(statement)


def create_tasks(conn: Any) -> None:
    """Create the per-task tables (the migration calls this, then :func:`fill_tasks`)."""
    for statement in TASKS_DDL:
        conn.execute(statement)


def create_keys(conn: Any) -> None:
    """Create the per-key tables (the migration calls this, then :func:`fill_keys`)."""
    for statement in KEYS_DDL:
        conn.execute(statement)


def create_task_latency(conn: Any) -> None:
    """Create the per-task latency tables (the migration calls this, then
    :func:`fill_task_latency`)."""
    for statement in TASK_LATENCY_DDL:
        conn.execute(statement)


def create_hours(conn: Any) -> None:
    """Create the per-hour table (the migration calls this, then :func:`fill_hours`)."""
    conn.execute(HOURS_DDL)


def create_daily(conn: Any) -> None:
    """Create the daily rollup tables (the migration calls this, then :func:`fill_daily`)."""
    for statement in DAILY_DDL:
        conn.execute(statement)


# -- writing ---------------------------------------------------------------------------------


def unseen_ids(conn: Any, rows: list[dict[str, Any]] | None) -> set[str]:
    """The ids among ``rows`` not yet in ``requests`` (call before inserting them)."""
    ids = list({str(r.get("id")) for r in rows or ()})
    return ids_absent(conn, ids)


def ids_absent(conn: Any, ids: list[str]) -> set[str]:
    present: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        cur = conn.execute(f"select id from requests where id in ({marks})", chunk)
        present.update(r[0] for r in cur.fetchall())
    return set(ids) - present


def record(conn: Any, by_table: dict[str, list[dict[str, Any]]], unseen: set[str]) -> None:
    """Add the rows just inserted to the rollups, in the caller's transaction. ``unseen`` is
    :func:`unseen_ids` taken before the insert: a request row counts when its id was not logged
    before and is now (the first of several rows with one id is the one stored)."""
    requests = by_table.get("requests") or []
    fresh: list[dict[str, Any]] = []
    if requests and unseen:
        stored = set(unseen) - ids_absent(conn, list(unseen))
        for row in requests:
            rid = str(row.get("id"))
            if rid in stored:
                stored.discard(rid)
                fresh.append(row)
        add_requests(conn, fresh)
    attempts = [a for a in by_table.get("student_attempts") or [] if _present(a, _ATTEMPT_REQUIRED)]
    if attempts:
        add_attempts(conn, attempts)
    add_token_pairs(conn, fresh, attempts)


def add_requests(
    conn: Any,
    rows: Iterable[dict[str, Any]],
    *,
    daily: bool = True,
    minutes: bool = True,
    narrow: bool = True,
    hours: bool = True,
    now: float | None = None,
) -> None:
    """Add request rows (already stored) to ``rollup_requests`` and ``rollup_latency``, to
    their daily twins, to the per-minute table and to the per-task, per-key and per-task
    latency tables and to the per-hour calls (unless ``daily``, ``minutes``, ``narrow`` or
    ``hours`` is off: before the migrations that made them).
    Per-minute sums are kept for :data:`MINUTES_KEPT_S` before ``now``; older ones are not
    written, and deleted."""
    by_minute: dict[tuple[Any, ...], dict[str, Any]] = {}
    latency: dict[tuple[Any, ...], int] = {}
    for row in rows:
        _add_request(row, by_minute, latency)
    sums = _folded(by_minute, lambda key: (key[0], *key[2:]))
    hist = {k: {"n": n} for k, n in latency.items()}
    _upsert(conn, "rollup_requests", REQUEST_KEYS, sums)
    _upsert(conn, "rollup_latency", LATENCY_KEYS, hist)
    if daily:
        _upsert(conn, DAILY["rollup_requests"], REQUEST_KEYS, _by_day(sums))
        _upsert(conn, DAILY["rollup_latency"], LATENCY_KEYS, _by_day(hist))
    if narrow:
        for twins, keys in NARROW:
            fewer = _folded(sums, itemgetter(*(REQUEST_KEYS.index(k) for k in keys)))
            _upsert(conn, twins["rollup_requests"], keys, fewer)
            _upsert(conn, twins["rollup_requests_daily"], keys, _by_day(fewer))
        answers = {k: v for k, v in hist.items() if k[3] not in LATENCY_LEFT_OUT}
        by_task = _folded(answers, itemgetter(*(LATENCY_KEYS.index(k) for k in TASK_LATENCY_KEYS)))
        _upsert(conn, TASK_LATENCY["rollup_latency"], TASK_LATENCY_KEYS, by_task)
        _upsert(conn, TASK_LATENCY["rollup_latency_daily"], TASK_LATENCY_KEYS, _by_day(by_task))
    if hours:
        calls: dict[int, int] = {}
        for key, acc in sums.items():
            calls[key[0]] = calls.get(key[0], 0) + acc["calls"]
        add_hours(conn, calls)
    if minutes:
        add_minutes(conn, by_minute, time.time() if now is None else now)


def add_hours(conn: Any, calls: dict[int, int]) -> None:
    """Add request rows per hour to :data:`HOURS`, each hour's ``stamp`` set to a new random
    number (in hour order: no deadlock between PostgreSQL writers)."""
    if not calls:
        return
    stamp = secrets.randbits(31)
    conn.executemany(
        f"insert into {HOURS} (hour, calls, stamp) values (?, ?, ?) on conflict (hour)"
        f" do update set calls = {HOURS}.calls + excluded.calls, stamp = excluded.stamp",
        [[hour, n, stamp] for hour, n in sorted(calls.items())],
    )


def fill_hours(conn: Any) -> None:
    """Fill the (empty) per-hour table from the per-task hourly sums, a random stamp an hour."""
    rows = conn.execute(
        f"select hour, sum(calls) from {TASKS['rollup_requests']} group by hour"
    ).fetchall()
    conn.executemany(
        f"insert into {HOURS} (hour, calls, stamp) values (?, ?, ?)",
        [[hour, int(n), secrets.randbits(31)] for hour, n in rows],
    )


def hours_changed(conn: Any, first: int, end: int) -> tuple[int, int, int]:
    """What says whether hours ``[first, end)`` changed: their rows' count, sum of calls and
    sum of stamps (any write to one of them changes the sums)."""
    row = conn.execute(
        f"select count(*), coalesce(sum(calls), 0), coalesce(sum(stamp), 0) from {HOURS}"
        " where hour >= ? and hour < ?",
        [first, end],
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def add_minutes(conn: Any, by_minute: dict[tuple[Any, ...], dict[str, Any]], now: float) -> None:
    """Write the per-minute sums of the kept span; delete the hours that left it."""
    first = hour_of(now - MINUTES_KEPT_S)
    recent = {k: v for k, v in by_minute.items() if k[0] >= first}
    _upsert(conn, MINUTES["rollup_requests"], MINUTE_KEYS, recent)
    conn.execute(f"delete from {MINUTES['rollup_requests']} where hour < ?", [first])


def _by_day(groups: dict[tuple[Any, ...], dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Hourly groups summed per day (the key's first element: the hour, then the day's)."""
    return _folded(groups, lambda key: (day_start(key[0]), *key[1:]))


def _folded(
    groups: dict[tuple[Any, ...], dict[str, Any]],
    coarser: Callable[[tuple[Any, ...]], tuple[Any, ...]],
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Groups summed into coarser ones (``coarser`` maps a key to its coarser key)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, sums in groups.items():
        into = coarser(key)
        acc = out.get(into)
        if acc is None:
            out[into] = dict(sums)
            continue
        for column, value in sums.items():
            if column == "first_at":
                acc[column] = min(acc[column], value)
            elif column == "last_at":
                acc[column] = max(acc[column], value)
            else:
                acc[column] += value
    return out


def fill_daily(conn: Any, *, batch: int = 20000) -> None:
    """Fill the (empty) daily tables from the hourly ones."""
    for table, daily in DAILY.items():
        keys = REQUEST_KEYS if table == "rollup_requests" else LATENCY_KEYS
        for rows in _batches(conn, f"select * from {table}", batch):
            groups = {
                tuple(r[k] for k in keys): {c: v for c, v in r.items() if c not in keys}
                for r in rows
            }
            _upsert(conn, daily, keys, _by_day(groups))


def fill_tasks(conn: Any) -> None:
    """Fill the (empty) per-task tables from the wide hourly and daily ones, in SQL."""
    _fill_narrow(conn, TASKS, TASK_KEYS)


def fill_keys(conn: Any) -> None:
    """Fill the (empty) per-key tables from the wide hourly and daily ones, in SQL."""
    _fill_narrow(conn, KEYS, KEY_KEYS)


def _fill_narrow(conn: Any, twins: dict[str, str], key_columns: tuple[str, ...]) -> None:
    sums = ", ".join(f"sum({c})" for c in REQUEST_SUMS)
    columns = ", ".join((*key_columns, *REQUEST_SUMS, "first_at", "last_at"))
    keys = ", ".join(key_columns)
    for wide, narrow in twins.items():
        conn.execute(
            f"insert into {narrow} ({columns}) select {keys}, {sums}, min(first_at),"
            f" max(last_at) from {wide} group by {keys}"
        )


def fill_task_latency(conn: Any) -> None:
    """Fill the (empty) per-task latency tables from the wide hourly and daily ones (the
    tasks' answers), in SQL."""
    keys = ", ".join(TASK_LATENCY_KEYS)
    marks = ", ".join("?" for _ in LATENCY_LEFT_OUT)
    for wide, narrow in TASK_LATENCY.items():
        conn.execute(
            f"insert into {narrow} ({keys}, n) select {keys}, sum(n) from {wide}"
            f" where served_by not in ({marks}) group by {keys}",
            list(LATENCY_LEFT_OUT),
        )


def add_attempts(conn: Any, rows: Iterable[dict[str, Any]]) -> None:
    """Add shadow comparisons among student attempt rows to ``rollup_agreement``."""
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        at, agreed = _number(row.get("created_at")), row.get("agreed")
        if row.get("kind") != "shadow" or agreed is None or at is None:
            continue
        acc = sums.setdefault((hour_of(at), str(row["task"])), {"compared": 0, "agreed": 0})
        acc["compared"] += 1
        acc["agreed"] += int(_number(agreed) or 0)
    _upsert(conn, "rollup_agreement", AGREEMENT_KEYS, sums)


def _add_request(
    row: dict[str, Any],
    sums: dict[tuple[Any, ...], dict[str, Any]],
    latency: dict[tuple[Any, ...], int],
) -> None:
    at = _number(row.get("created_at"))
    if at is None or not _present(row, _REQUIRED):
        return
    hour, served_by = hour_of(at), str(row["served_by"])
    model = row.get("teacher_model") or row.get("requested_model") or ""
    task, endpoint = str(row["task"]), str(row["endpoint"])
    key = (hour, math.floor(at / MINUTE_S), task, endpoint, served_by, row.get("api_key_id") or "")
    acc = sums.get((*key, str(model)))
    if acc is None:
        acc = sums[(*key, str(model))] = dict.fromkeys(REQUEST_SUMS, 0)
        acc["first_at"] = acc["last_at"] = at
    ok = row.get("status") == "ok"
    acc["calls"] += 1
    acc["errors"] += 0 if ok else 1
    reason = row.get("route_reason")
    acc["deferred"] += served_by == "teacher" and str(reason or "").startswith("deferred:")
    for column in ("prompt_tokens", "completion_tokens", "total_tokens", "bytes_in", "bytes_out"):
        acc[column] += int(_number(row.get(column)) or 0)
    for column in ("teacher_cost_usd", "student_cost_usd", "avoided_cost_usd", "saved_usd"):
        acc[column] += _number(row.get(column)) or 0.0
    acc["estimated"] += int(_number(row.get("cost_estimated")) or 0)
    ms = _number(row.get("latency_ms"))
    if ms is not None:
        acc["latency_ms_sum"] += ms
        acc["latency_n"] += 1
        if ok:
            lkey = (hour, task, endpoint, served_by, latency_bucket(ms))
            latency[lkey] = latency.get(lkey, 0) + 1
    acc["first_at"] = min(acc["first_at"], at)
    acc["last_at"] = max(acc["last_at"], at)


def _upsert(
    conn: Any, table: str, keys: tuple[str, ...], groups: dict[tuple[Any, ...], dict[str, Any]]
) -> None:
    if not groups:
        return
    values = list(next(iter(groups.values())))
    cols = [*keys, *values]
    updates = []
    for col in values:
        if col in ("first_at", "last_at"):  # min() / max() of two values is not portable
            cmp = "<" if col == "first_at" else ">"
            new = (
                f"case when excluded.{col} {cmp} {table}.{col}"
                f" then excluded.{col} else {table}.{col} end"
            )
        else:
            new = f"{table}.{col} + excluded.{col}"
        updates.append(f"{col} = {new}")
    sql = (
        f"insert into {table} ({', '.join(cols)}) values ({', '.join('?' for _ in cols)})"
        f" on conflict ({', '.join(keys)}) do update set {', '.join(updates)}"
    )
    # In key order: two writers adding to the same rows lock them in the same order (no
    # deadlock between PostgreSQL transactions).
    conn.executemany(sql, [[*k, *(v[c] for c in values)] for k, v in sorted(groups.items())])


def _present(row: dict[str, Any], columns: tuple[str, ...]) -> bool:
    return all(row.get(c) is not None for c in columns)


def _number(value: Any) -> float | None:
    """A numeric column's value as a number; None when missing or not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


# -- what the cost book learns: teacher answers' tokens, token pairs, teacher models ---------

TEACHER_ANSWERS = ("teacher", "shadow")
SHADOW_OF = "shadow of "
"""A sampled shadow call's ``route_reason``: this, then the student-served request's id."""
_Pair = tuple[Any, Any, Any, Any, Any, Any]
"""``(created_at, task, teacher prompt, teacher completion, student prompt, student
completion)``: ``created_at`` is the attempt's, or the shadow call's for a shadow pair."""


def create_token_pairs(conn: Any) -> None:
    """Create the cost book's tables (the migration calls this, then :func:`fill_token_pairs`)."""
    for statement in (*TOKEN_DDL, SHADOW_INDEX):
        conn.execute(statement)


def add_token_pairs(conn: Any, fresh: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> None:
    """Add what the cost book learns from the request rows just stored (``fresh``) and the
    attempt rows just inserted, in the caller's transaction, to ``rollup_token_pairs`` (per hour
    x task: the teacher answers, ``ok`` with both token counts, and their token sums; the
    (student attempt, teacher answer) pairs of one request with all four token counts, and
    their sums) and to ``rollup_teacher_models`` (per task, the teacher model of its latest
    teacher answer, ``ok`` or not).

    A pair is counted once, when the later of its two rows is stored: a teacher row
    (``teacher``, ``ok``) with the attempts at its request stored before or in this batch, an
    attempt with its request's teacher row stored before; a sampled shadow call (``shadow``,
    ``ok``, ``route_reason`` ``shadow of <id>``) with the ``shadow`` attempts at ``<id>``
    stored before or in this batch, a ``shadow`` attempt (which the gateway logs after its
    call) with the calls naming its request stored before."""
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    models: dict[str, tuple[float, str]] = {}
    for row in fresh:
        _add_answer(row, sums, models)
    for pair in _new_pairs(conn, fresh, attempts):
        _add_pair(pair, sums)
    _upsert(conn, "rollup_token_pairs", TOKEN_KEYS, sums)
    _upsert_models(conn, models)


def _token_sums(
    sums: dict[tuple[Any, ...], dict[str, Any]], at: float, task: Any
) -> dict[str, Any]:
    key = (hour_of(at), str(task))
    acc = sums.get(key)
    if acc is None:
        acc = sums[key] = dict.fromkeys(TOKEN_SUMS, 0)
    return acc


def _add_answer(
    row: dict[str, Any],
    sums: dict[tuple[Any, ...], dict[str, Any]],
    models: dict[str, tuple[float, str]],
) -> None:
    at = _number(row.get("created_at"))
    if at is None or row.get("served_by") not in TEACHER_ANSWERS or row.get("task") is None:
        return
    task, model = str(row["task"]), row.get("teacher_model")
    if model is not None and (task not in models or at >= models[task][0]):
        models[task] = (at, str(model))
    prompt, completion = _number(row.get("prompt_tokens")), _number(row.get("completion_tokens"))
    if row.get("status") != "ok" or prompt is None or completion is None:
        return
    acc = _token_sums(sums, at, task)
    acc["answers"] += 1
    acc["answer_prompt"] += int(prompt)
    acc["answer_completion"] += int(completion)


def _add_pair(pair: _Pair, sums: dict[tuple[Any, ...], dict[str, Any]]) -> None:
    at, task, *tokens = pair
    counts = [_number(t) for t in tokens]
    if _number(at) is None or task is None or any(c is None for c in counts):
        return
    acc = _token_sums(sums, at, task)
    acc["pairs"] += 1
    for column, count in zip(("tp", "tc", "sp", "sc"), counts, strict=True):
        acc[column] += int(count or 0)


def _new_pairs(
    conn: Any, fresh: list[dict[str, Any]], attempts: list[dict[str, Any]]
) -> list[_Pair]:
    """The token pairs the rows just stored complete (see :func:`add_token_pairs`)."""
    fresh_ids = {str(r["id"]) for r in fresh}
    return [
        *_teacher_pairs(conn, fresh, fresh_ids, attempts),
        *_shadow_pairs(conn, fresh, fresh_ids, attempts),
    ]


_ATTEMPT_TOKENS = "select request_id, created_at, task, prompt_tokens, completion_tokens"


def _teacher_pairs(
    conn: Any, fresh: list[dict[str, Any]], fresh_ids: set[str], attempts: list[dict[str, Any]]
) -> list[_Pair]:
    """Attempts at requests the teacher served (deferrals, shadow mode)."""
    pairs: list[_Pair] = []
    teacher = {
        str(r["id"]): r
        for r in fresh
        if r.get("served_by") == "teacher" and r.get("status") == "ok"
    }
    sql = f"{_ATTEMPT_TOKENS} from student_attempts where request_id"
    for a in _rows_in(conn, sql, list(teacher)):
        pairs.append(_pair(a["created_at"], a, teacher[str(a["request_id"])], a))
    earlier = {str(a["request_id"]) for a in attempts} - fresh_ids
    logged = _rows_in(
        conn,
        "select id, prompt_tokens, completion_tokens from requests"
        " where served_by = 'teacher' and status = 'ok' and id",
        sorted(earlier),
    )
    answers = {str(r["id"]): r for r in logged}
    for a in attempts:
        r = answers.get(str(a["request_id"]))
        if r is not None:
            pairs.append(_pair(a["created_at"], a, r, a))
    return pairs


def _shadow_pairs(
    conn: Any, fresh: list[dict[str, Any]], fresh_ids: set[str], attempts: list[dict[str, Any]]
) -> list[_Pair]:
    """Sampled shadow calls and the ``shadow`` attempts at the requests they name."""
    pairs: list[_Pair] = []
    shadows: dict[str, list[dict[str, Any]]] = {}
    for s in fresh:
        reason = str(s.get("route_reason") or "")
        if (
            s.get("served_by") == "shadow"
            and s.get("status") == "ok"
            and reason.startswith(SHADOW_OF)
        ):
            shadows.setdefault(reason[len(SHADOW_OF) :], []).append(s)
    sql = f"{_ATTEMPT_TOKENS} from student_attempts where kind = 'shadow' and request_id"
    for a in _rows_in(conn, sql, list(shadows)):
        for s in shadows[str(a["request_id"])]:
            pairs.append(_pair(s["created_at"], a, s, a))
    checked = [a for a in attempts if a["kind"] == "shadow"]
    calls: dict[str, list[dict[str, Any]]] = {}
    named = sorted({SHADOW_OF + str(a["request_id"]) for a in checked})
    for s in _rows_in(conn, _SHADOW_CALLS, named):  # by the index requests_shadow_of
        if str(s["id"]) not in fresh_ids:  # those in this batch are paired above
            calls.setdefault(str(s["route_reason"])[len(SHADOW_OF) :], []).append(s)
    for a in checked:
        for s in calls.get(str(a["request_id"]), ()):
            pairs.append(_pair(s["created_at"], a, s, a))
    return pairs


_SHADOW_CALLS = (
    "select id, created_at, route_reason, prompt_tokens, completion_tokens from requests"
    " where served_by = 'shadow' and status = 'ok' and route_reason"
)
SHADOW_INDEX = (
    "create index requests_shadow_of on requests (route_reason) where served_by = 'shadow'"
)
"""The shadow calls by the request they name: what a shadow attempt logged after its call
finds the call's tokens by."""


def _pair(
    at: Any, attempt: dict[str, Any], teacher: dict[str, Any], student: dict[str, Any]
) -> _Pair:
    return (
        at,
        attempt.get("task"),
        teacher.get("prompt_tokens"),
        teacher.get("completion_tokens"),
        student.get("prompt_tokens"),
        student.get("completion_tokens"),
    )


def _rows_in(conn: Any, sql: str, ids: list[str]) -> list[dict[str, Any]]:
    """The rows of ``sql``, which ends in a column compared with ``in (...)``, for ``ids``."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        cur = conn.execute(f"{sql} in ({', '.join('?' for _ in chunk)})", chunk)
        names = [d[0] for d in cur.description]
        out.extend(dict(zip(names, r, strict=True)) for r in cur.fetchall())
    return out


def _upsert_models(conn: Any, models: dict[str, tuple[float, str]]) -> None:
    if not models:
        return
    table = "rollup_teacher_models"
    later = f"excluded.at >= {table}.at"
    conn.executemany(
        f"insert into {table} (task, model, at) values (?, ?, ?) on conflict (task) do update"
        f" set model = case when {later} then excluded.model else {table}.model end,"
        f" at = case when {later} then excluded.at else {table}.at end",
        [[task, model, at] for task, (at, model) in sorted(models.items())],
    )


_PAIRS_SQL = (
    # deferrals and attempts at teacher-served requests
    "select a.created_at as at, a.task, r.prompt_tokens as tp, r.completion_tokens as tc,"
    " a.prompt_tokens as sp, a.completion_tokens as sc"
    " from student_attempts a join requests r on r.id = a.request_id"
    " where r.served_by = 'teacher' and r.status = 'ok'",
    # sampled shadow calls and the shadow attempts at the student-served requests they name
    "select s.created_at as at, a.task, s.prompt_tokens, s.completion_tokens,"
    " a.prompt_tokens, a.completion_tokens"
    " from requests s join student_attempts a"
    f" on a.request_id = substr(s.route_reason, {len(SHADOW_OF) + 1}) and a.kind = 'shadow'"
    f" where s.served_by = 'shadow' and s.status = 'ok' and s.route_reason like '{SHADOW_OF}%'",
)


def fill_token_pairs(conn: Any, *, batch: int = 20000) -> None:
    """Fill the (empty) cost book's tables from the whole log."""
    models: dict[str, tuple[float, str]] = {}
    answers = (
        "select created_at, task, served_by, status, teacher_model, prompt_tokens,"
        " completion_tokens from requests where served_by in ('teacher', 'shadow')"
    )
    for rows in _batches(conn, answers, batch):
        sums: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            _add_answer(row, sums, models)
        _upsert(conn, "rollup_token_pairs", TOKEN_KEYS, sums)
    _upsert_models(conn, models)
    for sql in _PAIRS_SQL:
        cur = conn.execute(sql)
        while chunk := cur.fetchmany(batch):
            sums = {}
            for pair in chunk:
                _add_pair(tuple(pair), sums)
            _upsert(conn, "rollup_token_pairs", TOKEN_KEYS, sums)


# -- filling from an existing log ------------------------------------------------------------

_REQUEST_COLUMNS = (
    "id",
    "created_at",
    "endpoint",
    "task",
    "task_source",
    "served_by",
    "status",
    "route_reason",
    "api_key_id",
    "teacher_model",
    "requested_model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "teacher_cost_usd",
    "student_cost_usd",
    "avoided_cost_usd",
    "saved_usd",
    "cost_estimated",
    "bytes_in",
    "bytes_out",
    "latency_ms",
)


def backfill(conn: Any, *, batch: int = 20000) -> int:
    """Fill the (empty) rollups from every row already logged; the request rows read."""
    n = 0
    for rows in _batches(conn, f"select {', '.join(_REQUEST_COLUMNS)} from requests", batch):
        add_requests(conn, rows, daily=False, minutes=False, narrow=False, hours=False)
        n += len(rows)
    sql = (
        "select request_id, created_at, task, student_version, kind, agreed"
        " from student_attempts where kind = 'shadow' and agreed is not null"
    )
    for rows in _batches(conn, sql, batch):
        add_attempts(conn, rows)
    return n


def _batches(
    conn: Any, sql: str, size: int, params: list[Any] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``sql`` as dicts, ``size`` at a time: memory stays flat at any log size
    (the upserts between batches write other tables than the one read)."""
    cur = conn.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    while chunk := cur.fetchmany(size):
        yield [dict(zip(names, r, strict=True)) for r in chunk]


def fill_minutes(conn: Any, now: float, *, batch: int = 20000) -> None:
    """Fill the (empty) per-minute table from the rows logged in the span it keeps."""
    columns = ", ".join(_REQUEST_COLUMNS)
    sql = f"select {columns} from requests where created_at >= ?"
    for rows in _batches(conn, sql, batch, [hour_of(now - MINUTES_KEPT_S) * HOUR_S]):
        by_minute: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            _add_request(row, by_minute, {})
        add_minutes(conn, by_minute, now)
