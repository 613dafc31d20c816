"""The cost and quality summary over a time window: the one source of every figure
``understudy report``, ``understudy tasks``, the dashboard and the demo's summary show (the
same function, the same definitions, each screen naming its window)."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from understudy.gateway.accounting import fmt
from understudy.gateway.accounting.prices import projected_monthly
from understudy.storage import reports
from understudy.storage.registry import all_task_states, get_model
from understudy.storage.rollups import HOUR_S, MINUTE_S, MINUTES_KEPT_S

if TYPE_CHECKING:
    import sqlite_utils

DEFINITIONS = (
    (
        "requests",
        "client requests answered in the window; shadow checks and relayed /v1 calls"
        " (embeddings, files, ...) are not counted",
    ),
    ("coverage", "the share of those requests the student served"),
    (
        "saved",
        "teacher cost avoided by student answers - student cost - shadow checks' teacher cost",
    ),
    (
        "teacher alone",
        "what the teacher would have cost answering every request: its spend on"
        " the requests it answered + the cost avoided",
    ),
    (
        "projected monthly",
        "the savings of the span counted, scaled to 30 days (saved / span x 30 days)",
    ),
)
"""What each figure means, stated on every screen that shows one."""

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
    teacher_alone_usd: float = 0.0
    """What the teacher would have cost answering every request of the task."""
    saved_share: float | None = None
    """``saved_usd`` as a share of ``teacher_alone_usd`` (None when that is 0)."""
    last_at: float | None = None
    """The task's most recent request in the window."""


@dataclass
class Summary:
    since: float
    until: float
    span_s: float
    """From the window's first request to its end: how long the traffic in it lasted."""
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
    teacher_alone_usd: float = 0.0
    """What the teacher would have cost answering every request: its spend on the requests
    it answered (shadow checks left out) + the cost the student's answers avoided."""
    saved_share: float | None = None
    """``saved_usd`` as a share of ``teacher_alone_usd`` (None when that is 0)."""
    window_s: float = 0.0
    """The window asked for (``24h``, ``7d``): its start rounded down to the hour is
    ``since``."""
    counted_s: float = 0.0
    """``until - since``: the span every figure is summed over, and the projection's basis."""
    shadow_calls: int = 0
    deferred: int = 0
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))


def summarize(
    db: sqlite_utils.Database,
    *,
    window_s: float,
    quality_target: float,
    student_free: bool,
    now: float | None = None,
) -> Summary:
    """Sums and rates over the last ``window_s`` seconds up to ``now``. The log is summed per
    minute or per hour (:mod:`storage.reports`), so the span counted starts at the start of the
    minute or hour holding ``now - window_s``: ``since`` and ``until`` say what was counted, and
    the monthly projection scales the savings of exactly that span to 30 days."""
    wall = time.time()
    asked_until = wall if now is None else now
    start, end = counted_span(asked_until - window_s, asked_until, wall)
    since = start
    # Rows after a past ``now`` in its last minute or hour are counted too: up to its end.
    until = max(asked_until, min(end, wall))
    totals = reports.cost_totals(db, since, until)
    agreement = reports.live_agreement(db, since, until)
    span = until - max(since, totals["first_at"] or until)
    counted = max(until - since, 1.0)
    states = {s.task: s for s in all_task_states(db)}
    scope, compared, agreed = _headline_agreement(agreement, states)
    tasks = [
        _task(row, agreement.get(row["key"]), states.get(row["key"]), quality_target, db, counted)
        for row in reports.cost_by(db, "task", since, until)
    ]
    tasks.sort(key=lambda t: (-t.saved_usd, -t.requests, t.task))
    alone = teacher_alone(totals)
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
        projected_monthly_usd=projected_monthly(totals["saved_usd"], counted, counted),
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
        teacher_alone_usd=alone,
        saved_share=totals["saved_usd"] / alone if alone > 0 else None,
        window_s=window_s,
        counted_s=counted,
        shadow_calls=sum(t.shadow_calls for t in tasks),
        deferred=sum(t.deferred for t in tasks),
    )


def counted_span(since: float, until: float, wall: float) -> tuple[float, float]:
    """The span ``[start, end)`` the log's sums count for a window ``[since, until)``: to the
    minute while the per-minute sums of its start are kept, else widened to whole hours (the
    rule of :func:`storage.reports.window`)."""
    if since >= wall - MINUTES_KEPT_S:
        return math.floor(since / MINUTE_S) * MINUTE_S, math.ceil(until / MINUTE_S) * MINUTE_S
    first, end = reports.hours(since, until)
    return first * HOUR_S, end * HOUR_S


def teacher_alone(sums: dict[str, Any]) -> float:
    """What the teacher would have cost answering every request in ``sums`` (a row of
    :mod:`storage.reports`): its spend on the requests it answered + the avoided cost."""
    answered = sums["teacher_spend_usd"] - sums["shadow_spend_usd"]
    return max(0.0, answered) + sums["avoided_usd"]


def describe_window(summary: Summary, *, named: bool = True) -> str:
    """``last 24h: 2026-11-30 18:22 to 2026-12-01 18:22 UTC``: the words every
    screen uses for the span it counted (without the ``last 24h: `` asked for, when not
    ``named``)."""
    span = f"{fmt.utc(summary.since)} to {fmt.utc(summary.until)} UTC"
    return f"last {fmt.duration(summary.window_s)}: {span}" if named else span


def projection_note(summary: Summary) -> str:
    """How the monthly projection was computed, in the words of the span it was computed on."""
    if not summary.requests:
        return "no traffic in this window yet"
    factor = 30 * 86400 / summary.counted_s
    return f"the savings of these {fmt.duration(summary.counted_s)} x {factor:.3g} (30 days)"


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
    counted_s: float,
) -> TaskSummary:
    target = default_target
    if state is not None and state.champion_id:
        try:
            target = float(
                get_model(db, state.champion_id).router.get("quality_target", default_target)
            )
        except Exception:  # noqa: BLE001 - a broken registry row must not hide the report
            target = default_target
    compared = agreement["compared"] if agreement else 0
    alone = teacher_alone(row)
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
        projected_monthly_usd=projected_monthly(row["saved_usd"], counted_s, counted_s),
        agreement=agreement["agreed"] / compared if compared else None,
        compared=compared,
        quality_target=target,
        mode=state.mode if state is not None else "teacher-only",
        champion=state.champion_id if state is not None else None,
        estimated=row["estimated"],
        teacher_alone_usd=alone,
        saved_share=row["saved_usd"] / alone if alone > 0 else None,
        last_at=row.get("last_at"),
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
