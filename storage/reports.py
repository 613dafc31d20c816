"""Aggregations over the request log for cost reports, the dashboard and the token ratios.

Thin SQL over the cost columns each request row carries (``teacher_cost_usd``,
``student_cost_usd``, ``avoided_cost_usd``, ``saved_usd``); no pricing logic here. Relayed
calls (``served_by = 'passthrough'``: embeddings, files, ...) have their own sums
(:func:`passthrough_by_endpoint`) and stay out of the tasks' (coverage, savings, latency).
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

GROUPS = {
    "task": "task",
    "day": "date(created_at, 'unixepoch')",
    "api_key": "coalesce(api_key_id, '-')",
}

_NOT_RELAYED = "served_by != 'passthrough'"

_SUMS = """
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


def cost_totals(db: sqlite_utils.Database, since: float, until: float) -> dict[str, Any]:
    """One row of sums over every request in ``[since, until)``."""
    rows = list(
        db.query(
            f"select {_SUMS} from requests where created_at >= ? and created_at < ?"
            f" and {_NOT_RELAYED}",
            [since, until],
        )
    )
    return _clean(rows[0])


def cost_by(
    db: sqlite_utils.Database, group: str, since: float, until: float
) -> list[dict[str, Any]]:
    """Sums per ``task``, ``day`` (UTC) or ``api_key`` (its non-secret id) in the window."""
    key = GROUPS[group]
    rows = db.query(
        f"select {key} as key, {_SUMS} from requests where created_at >= ? and created_at < ?"
        f" and {_NOT_RELAYED} group by key order by key",
        [since, until],
    )
    return [_clean(r) for r in rows]


def cost_series(
    db: sqlite_utils.Database, since: float, until: float, bucket_s: float
) -> list[dict[str, Any]]:
    """Per task and time bucket (start time in seconds): requests, student-served, saved."""
    rows = db.query(
        "select task, cast((created_at - ?) / ? as integer) as bucket,"
        " sum(served_by != 'shadow') as requests, sum(served_by = 'student') as student,"
        " coalesce(sum(saved_usd), 0.0) as saved_usd"
        " from requests where created_at >= ? and created_at < ?"
        f" and {_NOT_RELAYED} group by task, bucket order by task, bucket",
        [since, bucket_s, since, until],
    )
    return [{**r, "start": since + r.pop("bucket") * bucket_s} for r in rows]


def passthrough_by_endpoint(
    db: sqlite_utils.Database, since: float, until: float
) -> list[dict[str, Any]]:
    """Relayed calls per endpoint family in the window: calls, failures, body bytes each way,
    tokens and teacher spend (where the answers carried usage), mean latency."""
    rows = db.query(
        "select endpoint, count(*) as requests, sum(status != 'ok') as failed,"
        " coalesce(sum(bytes_in), 0) as bytes_in, coalesce(sum(bytes_out), 0) as bytes_out,"
        " coalesce(sum(total_tokens), 0) as tokens,"
        " coalesce(sum(teacher_cost_usd), 0.0) as teacher_spend_usd,"
        " avg(latency_ms) as mean_latency_ms"
        " from requests where served_by = 'passthrough' and created_at >= ? and created_at < ?"
        " group by endpoint order by endpoint",
        [since, until],
    )
    return [dict(r) for r in rows]


def live_agreement(db: sqlite_utils.Database, since: float, until: float) -> dict[str, Any]:
    """Per task: shadow comparisons in the window and how many agreed."""
    rows = db.query(
        "select task, count(*) as compared, sum(agreed) as agreed from student_attempts"
        " where kind = 'shadow' and agreed is not null and created_at >= ? and created_at < ?"
        " group by task",
        [since, until],
    )
    return {r["task"]: {"compared": r["compared"], "agreed": r["agreed"] or 0} for r in rows}


def latencies(
    db: sqlite_utils.Database, since: float, until: float, limit: int = 20000
) -> list[dict[str, Any]]:
    """Latency of the most recent answered requests in the window (at most ``limit``)."""
    return list(
        db.query(
            "select task, served_by, latency_ms from requests where created_at >= ?"
            " and created_at < ? and status = 'ok' and served_by not in ('shadow', 'passthrough')"
            " and latency_ms is not null order by created_at desc limit ?",
            [since, until, limit],
        )
    )


def token_ratio_sums(db: sqlite_utils.Database, since: float) -> dict[str, dict[str, Any]]:
    """Per task, token sums of (student attempt, teacher answer) pairs of the same request:
    deferrals and shadow-mode attempts (the teacher served the request itself) and sampled
    shadow calls (a ``shadow`` row naming the student-served request)."""
    pairs = """
        select a.task as task, a.prompt_tokens as sp, a.completion_tokens as sc,
               r.prompt_tokens as tp, r.completion_tokens as tc
        from student_attempts a join requests r on r.id = a.request_id
        where a.created_at >= :since and r.served_by = 'teacher' and r.status = 'ok'
        union all
        select a.task, a.prompt_tokens, a.completion_tokens, s.prompt_tokens, s.completion_tokens
        from requests s join student_attempts a
             on a.request_id = substr(s.route_reason, 11) and a.kind = 'shadow'
        where s.created_at >= :since and s.served_by = 'shadow' and s.status = 'ok'
              and s.route_reason like 'shadow of %'
    """
    rows = db.query(
        f"select task, count(*) as pairs, sum(tp) as tp, sum(tc) as tc, sum(sp) as sp,"
        f" sum(sc) as sc from ({pairs}) where tp is not null and sp is not null"
        f" and tc is not null and sc is not null group by task",
        {"since": since},
    )
    return {r["task"]: r for r in rows}


def teacher_token_means(db: sqlite_utils.Database, since: float) -> dict[str, dict[str, Any]]:
    """Per task, the mean prompt and completion tokens of its teacher answers since ``since``
    (served or shadow): what a student answer of the task is worth before its token ratio is
    learned."""
    rows = db.query(
        "select task, count(*) as answers, avg(prompt_tokens) as prompt,"
        " avg(completion_tokens) as completion from requests"
        " where created_at >= ? and served_by in ('teacher', 'shadow') and status = 'ok'"
        " and prompt_tokens is not null and completion_tokens is not null group by task",
        [since],
    )
    return {r["task"]: r for r in rows}


def latest_teacher_models(db: sqlite_utils.Database, since: float) -> dict[str, str]:
    """Per task, the teacher model named in its most recent teacher answer since ``since``."""
    rows = db.query(
        "select task, teacher_model, max(created_at) from requests where created_at >= ?"
        " and served_by in ('teacher', 'shadow') and teacher_model is not null group by task",
        [since],
    )
    return {r["task"]: r["teacher_model"] for r in rows}


def distill_run_counts(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Distillation runs per task and outcome (promoted, rejected, failed, skipped, running)."""
    return list(
        db.query(
            "select task, case when promoted then 'promoted'"
            " when status = 'succeeded' then 'rejected' else status end as outcome,"
            " count(*) as runs from distill_runs group by task, outcome"
        )
    )


def last_distill_success(db: sqlite_utils.Database) -> dict[str, float]:
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
