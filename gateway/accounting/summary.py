"""The cost and quality summary over a time window: what ``understudy report`` prints and what
the dashboard's headline numbers show (the same function builds both)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from understudy.gateway.accounting.prices import projected_monthly
from understudy.storage import reports
from understudy.storage.registry import all_task_states, get_model

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"2w"``, ``"90s"`` -> seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: use a number and s, m, h, d or w (7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass
class TaskSummary:
    task: str
    requests: int
    student: int
    teacher: int
    deferred: int
    shadow_calls: int
    failed: int
    coverage: float
    teacher_spend_usd: float
    shadow_spend_usd: float
    avoided_usd: float
    student_cost_usd: float
    saved_usd: float
    projected_monthly_usd: float
    agreement: float | None
    compared: int
    quality_target: float
    mode: str
    champion: str | None
    estimated: int = 0
    """Student answers whose saving is an estimate (valued before the token ratio was known)."""


@dataclass
class Summary:
    since: float
    until: float
    span_s: float
    requests: int
    student: int
    coverage: float
    teacher_spend_usd: float
    shadow_spend_usd: float
    avoided_usd: float
    student_cost_usd: float
    saved_usd: float
    projected_monthly_usd: float
    agreement: float | None
    compared: int
    agreement_scope: str  # "served": tasks the student serves; "shadow": shadow-mode only
    quality_target: float
    student_free: bool
    tasks: list[TaskSummary] = field(default_factory=list)
    by_day: list[dict[str, Any]] = field(default_factory=list)
    by_key: list[dict[str, Any]] = field(default_factory=list)
    passthrough: list[dict[str, Any]] = field(default_factory=list)
    """Relayed calls (embeddings, files, audio, ...) per endpoint family: calls, failures,
    bytes each way, tokens and teacher spend. Not in the numbers above."""
    estimated: int = 0
    """Student answers whose saving is an estimate (valued before the token ratio was known)."""


def summarize(
    db: sqlite_utils.Database,
    *,
    window_s: float,
    quality_target: float,
    student_free: bool,
    now: float | None = None,
) -> Summary:
    """Sums and rates over the last ``window_s`` seconds up to ``now``."""
    until = time.time() if now is None else now
    since = until - window_s
    totals = reports.cost_totals(db, since, until)
    agreement = reports.live_agreement(db, since, until)
    span = until - max(since, totals["first_at"] or until)
    states = {s.task: s for s in all_task_states(db)}
    scope, compared, agreed = _headline_agreement(agreement, states)
    tasks = [
        _task(row, agreement.get(row["key"]), states.get(row["key"]), quality_target, db, until)
        for row in reports.cost_by(db, "task", since, until)
    ]
    tasks.sort(key=lambda t: (-t.saved_usd, -t.requests, t.task))
    return Summary(
        since=since,
        until=until,
        span_s=span,
        requests=totals["requests"],
        student=totals["student"],
        coverage=_share(totals["student"], totals["requests"]),
        teacher_spend_usd=totals["teacher_spend_usd"],
        shadow_spend_usd=totals["shadow_spend_usd"],
        avoided_usd=totals["avoided_usd"],
        student_cost_usd=totals["student_cost_usd"],
        saved_usd=totals["saved_usd"],
        projected_monthly_usd=projected_monthly(totals["saved_usd"], span),
        agreement=agreed / compared if compared else None,
        compared=compared,
        agreement_scope=scope,
        quality_target=quality_target,
        student_free=student_free,
        tasks=tasks,
        by_day=reports.cost_by(db, "day", since, until),
        by_key=reports.cost_by(db, "api_key", since, until),
        passthrough=reports.passthrough_by_endpoint(db, since, until),
        estimated=totals["estimated"],
    )


def _headline_agreement(
    agreement: dict[str, dict[str, Any]], states: dict[str, Any]
) -> tuple[str, int, int]:
    """Agreement on the tasks a student serves (routed); shadow-mode tasks only when no
    routed task has comparisons yet."""
    served = {t for t, s in states.items() if s.champion_id and s.mode == "routed"}
    picked = {t: a for t, a in agreement.items() if t in served}
    scope = "served"
    if not any(a["compared"] for a in picked.values()):
        picked, scope = agreement, "shadow"
    compared = sum(a["compared"] for a in picked.values())
    agreed = sum(a["agreed"] for a in picked.values())
    return (scope if compared else "none"), compared, agreed


def _task(
    row: dict[str, Any],
    agreement: dict[str, Any] | None,
    state: Any,
    default_target: float,
    db: sqlite_utils.Database,
    until: float,
) -> TaskSummary:
    target = default_target
    if state is not None and state.champion_id:
        try:
            target = float(
                get_model(db, state.champion_id).router.get("quality_target", default_target)
            )
        except Exception:  # noqa: BLE001 - a broken registry row must not hide the report
            target = default_target
    span = until - (row["first_at"] or until)
    compared = agreement["compared"] if agreement else 0
    return TaskSummary(
        task=row["key"],
        requests=row["requests"],
        student=row["student"],
        teacher=row["teacher"],
        deferred=row["deferred"],
        shadow_calls=row["shadow_calls"],
        failed=row["failed"],
        coverage=_share(row["student"], row["requests"]),
        teacher_spend_usd=row["teacher_spend_usd"],
        shadow_spend_usd=row["shadow_spend_usd"],
        avoided_usd=row["avoided_usd"],
        student_cost_usd=row["student_cost_usd"],
        saved_usd=row["saved_usd"],
        projected_monthly_usd=projected_monthly(row["saved_usd"], span),
        agreement=agreement["agreed"] / compared if compared else None,
        compared=compared,
        quality_target=target,
        mode=state.mode if state is not None else "teacher-only",
        champion=state.champion_id if state is not None else None,
        estimated=row["estimated"],
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
