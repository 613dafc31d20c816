"""``understudy report``: savings, coverage and agreement over a window, in the terminal."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from typing import IO, Any

from understudy.distiller.command_checks import existing_store
from understudy.gateway.accounting import fmt
from understudy.gateway.accounting.summary import (
    Summary,
    describe_window,
    projection_note,
    summarize,
)
from understudy.settings import Settings
from understudy.storage.database import Store

DEFAULT_WINDOW_S = 7 * 86400.0
"""The window ``report``, ``tasks`` and the dashboard show unless asked for another."""

CSV_COLUMNS = (
    "group",
    "key",
    "requests",
    "student",
    "coverage",
    "deferred",
    "shadow_calls",
    "teacher_spend_usd",
    "shadow_spend_usd",
    "avoided_usd",
    "student_cost_usd",
    "saved_usd",
    "estimated",
    "agreement",
)


def build_summary(settings: Settings, window_s: float, now: float | None = None) -> Summary:
    store = Store(settings.db_path)
    store.migrate()
    with store.read() as db:
        return summarize(
            db,
            window_s=window_s,
            quality_target=settings.router.quality_target,
            student_free=settings.costs.student_per_million == 0
            and settings.costs.student_gpu_hour == 0,
            now=now,
        )


def report(
    settings: Settings, *, window_s: float, fmt_name: str = "table", out: IO[str] | None = None
) -> int:
    out = out or sys.stdout
    existing_store(settings.data_dir, settings.db_path)  # a report never creates a database
    summary = build_summary(settings, window_s)
    if fmt_name == "json":
        out.write(json.dumps(asdict(summary), indent=2) + "\n")
    elif fmt_name == "csv":
        write_csv(summary, out)
    else:
        out.write(render_table(summary, window_s))
    return 0


def write_csv(summary: Summary, out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    total = asdict(summary) | {"deferred": sum(t.deferred for t in summary.tasks)}
    total["shadow_calls"] = sum(t.shadow_calls for t in summary.tasks)
    writer.writerow(_csv_row("total", "all", total))
    for task in summary.tasks:
        writer.writerow(_csv_row("task", task.task, asdict(task)))
    for group, rows in (("day", summary.by_day), ("api_key", summary.by_key)):
        for row in rows:
            coverage = row["student"] / row["requests"] if row["requests"] else 0.0
            writer.writerow(_csv_row(group, row["key"], row | {"coverage": coverage}))
    for row in summary.passthrough:
        writer.writerow(_csv_row("passthrough", row["endpoint"], row))


def _csv_row(group: str, key: str, values: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"group": group, "key": key}
    for column in CSV_COLUMNS[2:]:
        value = values.get(column)
        row[column] = round(value, 6) if isinstance(value, float) else value
    return row


def _estimate_note(estimated: int) -> str:
    if not estimated:
        return ""
    return (
        f"   (estimate: {fmt.count(estimated)} student answers valued before the token ratio"
        " was learned)"
    )


def _share_note(s: Summary) -> str:
    if s.saved_share is None:
        return "no teacher cost in this window"
    return (
        f"{fmt.pct(s.saved_share)} of the {fmt.usd(s.teacher_alone_usd)} the teacher alone"
        " would have cost"
    )


def definition_lines(s: Summary) -> list[str]:
    """What each figure means (the same words on every screen)."""
    width = max(len(name) for name in s.definitions)
    return ["definitions:"] + [
        f"  {name:<{width}}  {meaning}" for name, meaning in s.definitions.items()
    ]


def render_table(s: Summary, window_s: float) -> str:
    lines = [
        f"Understudy report: {describe_window(s)}",
        "",
        f"  saved             {fmt.usd(s.saved_usd):>12}   {_share_note(s)}"
        f"{_estimate_note(s.estimated)}",
        f"  projected         {fmt.usd(s.projected_monthly_usd):>12}   per month: "
        f"{projection_note(s)}",
        f"  coverage          {fmt.pct(s.coverage):>12}   "
        f"{fmt.count(s.student)} of {fmt.count(s.requests)} requests served by the student",
        f"  live agreement    {fmt.pct(s.agreement):>12}   target {fmt.pct(s.quality_target)}"
        f" ({fmt.count(s.compared)} shadow comparisons on {s.agreement_scope} tasks)",
        f"  teacher spend     {fmt.usd(s.teacher_spend_usd):>12}   "
        f"of which shadow checks {fmt.usd(s.shadow_spend_usd)}",
        f"  teacher avoided   {fmt.usd(s.avoided_usd):>12}",
        f"  student cost      {fmt.usd(s.student_cost_usd):>12}"
        + ("   (no student price set: the student is free)" if s.student_free else ""),
        "",
    ]
    if not s.tasks:
        lines.append("no requests in this window")
        return "\n".join(lines + _passthrough_lines(s) + ["", *definition_lines(s)]) + "\n"
    header = (
        "task",
        "requests",
        "coverage",
        "deferred",
        "agreement",
        "target",
        "saved",
        "per month",
        "teacher spend",
        "student",
    )
    rows = [
        (
            t.task,
            fmt.count(t.requests),
            fmt.pct(t.coverage),
            fmt.count(t.deferred),
            fmt.pct(t.agreement),
            fmt.pct(t.quality_target),
            fmt.usd(t.saved_usd),
            fmt.usd(t.projected_monthly_usd),
            fmt.usd(t.teacher_spend_usd),
            t.champion or "none",
        )
        for t in s.tasks
    ]
    lines += _table(header, rows)
    by_day = [
        (
            r["key"],
            fmt.count(r["requests"]),
            fmt.pct(r["student"] / r["requests"] if r["requests"] else None),
            fmt.usd(r["saved_usd"]),
            fmt.usd(r["teacher_spend_usd"]),
        )
        for r in s.by_day
    ]
    lines += ["", *_table(("day (UTC)", "requests", "coverage", "saved", "teacher spend"), by_day)]
    by_key = [
        (
            r["key"],
            fmt.count(r["requests"]),
            fmt.usd(r["saved_usd"]),
            fmt.usd(r["teacher_spend_usd"]),
        )
        for r in s.by_key
    ]
    lines += ["", *_table(("api key", "requests", "saved", "teacher spend"), by_key)]
    return "\n".join(lines + _passthrough_lines(s) + ["", *definition_lines(s)]) + "\n"


def _passthrough_lines(s: Summary) -> list[str]:
    """Relayed calls per endpoint family (not in the numbers above)."""
    if not s.passthrough:
        return []
    rows = [
        (
            r["endpoint"],
            fmt.count(r["requests"]),
            fmt.count(r["failed"] or 0),
            fmt.count(r["tokens"]),
            fmt.usd(r["teacher_spend_usd"]),
            fmt.count(r["bytes_in"]),
            fmt.count(r["bytes_out"]),
        )
        for r in s.passthrough
    ]
    header = ("passed through", "requests", "failed", "tokens", "teacher spend", "bytes in")
    return ["", *_table((*header, "bytes out"), rows)]


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = []
    for row in table:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out
