"""Everything the dashboard shows, read from the database in one pass (run off the event loop).

Every figure comes from :func:`gateway.accounting.summary.summarize` over the page's window,
the same as ``understudy report`` and ``understudy tasks``; the charts sum the same rows in
buckets of that window (their last cumulative point is the headline).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from understudy.gateway.accounting.summary import Summary, summarize
from understudy.gateway.config import GatewayConfig
from understudy.storage import reports
from understudy.storage.database import Store
from understudy.storage.distill_queries import get_run, list_runs
from understudy.storage.registry import ModelVersion, all_task_states, events, get_model

if TYPE_CHECKING:
    import sqlite_utils

HISTORY_KINDS = ("promoted", "rollback", "mode")


@dataclass
class StudentCard:
    task: str
    mode: str
    mode_reason: str | None
    champion: ModelVersion | None
    previous_id: str | None
    gates: list[dict[str, Any]]
    last_run: dict[str, Any] | None
    history: list[dict[str, Any]]
    agreement: float | None
    compared: int
    coverage: float
    quality_target: float
    requests: int


@dataclass
class DashboardData:
    summary: Summary
    window_s: float
    bucket_s: float
    buckets: list[float]
    saved: dict[str, list[float]]  # per task, saved USD per bucket
    coverage: dict[str, list[float | None]]  # per task, student share per bucket
    latency: list[dict[str, Any]]
    students: list[StudentCard]
    runs: list[dict[str, Any]]
    generated_at: float = field(default_factory=time.time)


DAY_S = 86400.0

CHARTED_TASKS = 8
"""Most lines a chart draws: the tasks that saved most, the rest summed as one line."""


def other_tasks(count: int) -> str:
    """The name of the line that sums ``count`` tasks not drawn on their own."""
    return f"other tasks ({count})"


def _charted(summary: Summary) -> tuple[list[str] | None, str]:
    """The tasks drawn as their own lines (the summary's order: those that saved most) and the
    name of the one line summing the rest; ``None``: every task has its line. A log of many
    tasks draws a readable chart, and a page that does not grow with the number of tasks."""
    names = [t.task for t in summary.tasks]
    if len(names) <= CHARTED_TASKS:
        return None, ""
    return names[: CHARTED_TASKS - 1], other_tasks(len(names) - (CHARTED_TASKS - 1))


def bucket_size(window_s: float) -> float:
    """Points per minute for the last hour, per hour up to a week, per day beyond: a demo of a
    few minutes is a line, not one dot."""
    if window_s <= 3600:
        return 60.0
    return 3600.0 if window_s <= 7 * DAY_S else DAY_S


def is_noop(event: dict[str, Any]) -> bool:
    """A mode event that changed nothing (``routed -> routed``): not worth a line."""
    detail = event.get("detail") or {}
    return event.get("kind") == "mode" and detail.get("from") == detail.get("mode")


def gather(
    store: Store, settings: GatewayConfig, window_s: float, now: float | None = None
) -> DashboardData:
    now = time.time() if now is None else now
    with store.read() as db:
        return _gather(db, settings, window_s, now)


def _gather(
    db: sqlite_utils.Database, settings: GatewayConfig, window_s: float, now: float
) -> DashboardData:
    costs = settings.costs
    summary = summarize(
        db,
        window_s=window_s,
        quality_target=settings.router.quality_target,
        student_free=costs.student_per_million == 0 and costs.student_gpu_hour == 0,
        now=now,
    )
    bucket = bucket_size(window_s)
    # Buckets of the summary's own window, so the charts sum exactly the headline's rows; day
    # points are UTC days (the first one from the window's start), summed from the daily sums.
    start = summary.since
    anchor = 0.0 if bucket >= DAY_S else start
    first = math.floor((start - anchor) / bucket)
    n = max(1, math.ceil((now - anchor) / bucket) - first)
    buckets = [max(start, anchor + (first + i) * bucket) for i in range(n)]
    own, rest = _charted(summary)
    saved: dict[str, list[float]] = {}
    counts: dict[str, list[list[int]]] = {}  # per line, [requests, student] per bucket
    for row in reports.cost_series(db, start, now, bucket, own=own, rest=rest, anchor=anchor):
        i = min(row["bucket"], n - 1)
        name = row["task"]
        if name not in saved:  # a line's buckets made once, not for each of its rows
            saved[name] = [0.0] * n
            counts[name] = [[0, 0] for _ in range(n)]
        saved[name][i] += row["saved_usd"]
        pair = counts[name][i]
        pair[0] += row["requests"]
        pair[1] += row["student"]
    coverage = {
        name: [student / requests if requests else None for requests, student in pairs]
        for name, pairs in counts.items()
    }
    return DashboardData(
        summary=summary,
        window_s=window_s,
        bucket_s=bucket,
        buckets=buckets,
        saved=saved,
        coverage=coverage,
        latency=reports.latency_summary(db, summary.since, now),
        students=_students(db, summary),
        runs=list_runs(db, limit=12),
        generated_at=now,
    )


def _students(db: sqlite_utils.Database, summary: Summary) -> list[StudentCard]:
    by_task = {t.task: t for t in summary.tasks}
    states = {s.task: s for s in all_task_states(db)}
    cards = []
    for task in sorted(set(states) | set(by_task), key=lambda t: (t not in states, t)):
        state = states.get(task)
        stats = by_task.get(task)
        champ = _model(db, state.champion_id) if state and state.champion_id else None
        run = get_run(db, champ.run_id) if champ and champ.run_id else None
        last = list_runs(db, task, limit=1)
        cards.append(
            StudentCard(
                task=task,
                mode=state.mode if state else "routed",
                mode_reason=state.reason if state else None,
                champion=champ,
                previous_id=state.previous_id if state else None,
                gates=list((run or {}).get("gates") or []),
                last_run=last[0] if last else None,
                history=[
                    e
                    for e in events(db, task, limit=50)
                    if e["kind"] in HISTORY_KINDS and not is_noop(e)
                ][:6],
                agreement=stats.agreement if stats else None,
                compared=stats.compared if stats else 0,
                coverage=stats.coverage if stats else 0.0,
                quality_target=stats.quality_target if stats else summary.quality_target,
                requests=stats.requests if stats else 0,
            )
        )
    return cards


def _model(db: sqlite_utils.Database, model_id: str) -> ModelVersion | None:
    try:
        return get_model(db, model_id)
    except Exception:  # noqa: BLE001 - a missing registry row shows as "unknown"
        return None
