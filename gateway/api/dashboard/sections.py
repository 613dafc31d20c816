"""The lower sections of the dashboard: one card per task's student, latency, distill runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from understudy.gateway.accounting import fmt
from understudy.gateway.api.dashboard import svg
from understudy.gateway.api.dashboard.data import DashboardData, StudentCard

MODE_PILL = {"routed": "good", "shadow": "warn", "teacher-only": "idle"}
RUN_PILL = {"promoted": "good", "rejected": "warn", "failed": "bad", "skipped": "idle"}


def student_cards(data: DashboardData, *, admin: bool, colors: dict[str, str]) -> str:
    if not data.students:
        return '<div class="panel empty">no tasks yet: send traffic through the gateway</div>'
    cards = "".join(_card(c, admin, colors.get(c.task, "#6b7280")) for c in data.students)
    return f'<section class="cards">{cards}</section>'


def _card(c: StudentCard, admin: bool, color: str) -> str:
    if c.champion is None:
        mode_pill = '<span class="pill idle">teacher only: no student yet</span>'
        version = ""
    else:
        mode_pill = f'<span class="pill {MODE_PILL.get(c.mode, "idle")}">{escape(c.mode)}</span>'
        version = f'<span class="ver">{escape(c.champion.id)}</span>'
    button = ""
    if admin and c.previous_id:
        button = (
            f'<button class="rollback right" data-task="{escape(c.task)}" '
            f'data-to="{escape(c.previous_id)}">Roll back to {escape(c.previous_id)}</button>'
        )
    ok = c.agreement is not None and c.agreement >= c.quality_target
    agreement = (
        f"{svg.bullet(c.agreement, c.quality_target, ok=ok)} "
        f"<b>{fmt.pct(c.agreement)}</b> <span class='muted'>vs {fmt.pct(c.quality_target)}"
        f" · {fmt.count(c.compared)} compared</span>"
    )
    rows = [
        ("live agreement", agreement),
        ("coverage", f"<b>{fmt.pct(c.coverage)}</b> of {fmt.count(c.requests)} requests"),
        ("router threshold", escape(_threshold(c))),
    ]
    if c.mode_reason and c.champion is not None:
        rows.append(("last change", escape(c.mode_reason)))
    rows.append(("last distill run", _last_run(c.last_run)))
    kv = "".join(f"<span>{escape(k)}</span><span>{v}</span>" for k, v in rows)
    return (
        f'<article class="card" id="task-{escape(c.task)}" style="border-top:3px solid {color}">'
        f'<div class="top"><span class="task">{escape(c.task)}</span>{version}{mode_pill}'
        f"{button}</div>"
        f'<div class="kv">{kv}</div>{_gates(c.gates)}{_history(c.history)}</article>'
    )


def _threshold(c: StudentCard) -> str:
    if c.champion is None:
        return "-"
    value = (c.champion.router.get("threshold") or {}).get("threshold")
    expected = (c.champion.router.get("threshold") or {}).get("expected_coverage")
    if value is None:
        return "serves nothing (no threshold reaches the target)" if expected == 0 else "fixed"
    text = f"{value:.3f}"
    if expected is not None and math.isfinite(expected):
        text += f" (expected coverage {expected * 100:.0f}%)"
    choice = c.champion.router.get("threshold") or {}
    bound, n = choice.get("agreement_lower_bound"), choice.get("n_calibration")
    if bound is not None and n:
        text += f"; certified: agreement >= {bound:.3f} on {n} held-out examples"
    return text


def _last_run(run: dict[str, Any] | None) -> str:
    if run is None:
        return "<span class='muted'>none yet</span>"
    outcome = _outcome(run)
    reason = run.get("reason") or ""
    return (
        f'<span class="pill {RUN_PILL.get(outcome, "idle")}">{escape(outcome)}</span> '
        f"<span class='muted'>{fmt.utc(run.get('finished_at') or run.get('started_at'))}"
        f"{' · ' + escape(reason[:90]) if reason else ''}</span>"
    )


def _gates(gates: list[dict[str, Any]]) -> str:
    if not gates:
        return ""
    chips = []
    for g in gates:
        mark, cls = ("✓", "pass") if g.get("passed") else ("✗", "fail")
        value = g.get("value")
        shown = "-" if value is None else f"{value:.3f}"
        title = escape(str(g.get("detail") or ""))
        chips.append(
            f'<span class="gate {cls}" title="{title}">{mark} {escape(str(g.get("name")))} '
            f"{shown}</span>"
        )
    return f'<div class="gates" aria-label="gate results">{"".join(chips)}</div>'


def _history(items: list[dict[str, Any]]) -> str:
    if not items:
        return ""
    lines = []
    for e in items:
        d = e.get("detail") or {}
        if e["kind"] == "promoted":
            text = f"promoted {d.get('model')}" + (
                f" (was {d.get('previous')})" if d.get("previous") else ""
            )
        elif e["kind"] == "rollback":
            text = f"rolled back {d.get('from')} → {d.get('model')}"
        else:
            text = f"mode {d.get('from')} → {d.get('mode')} ({d.get('reason')})"
        lines.append(f"<li><time>{fmt.utc(e['created_at'])}</time>{escape(text)}</li>")
    return f'<ul class="history">{"".join(lines)}</ul>'


def latency_table(data: DashboardData) -> str:
    title = "<h3>Latency</h3>"
    if not data.latency:
        return f'<div class="panel">{title}<div class="empty">no answered requests</div></div>'
    head = (("task", ""), ("served by", ""), ("requests", "num"), ("p50", "num"), ("p95", "num"))
    rows = [
        (
            escape(r["task"]),
            escape(r["served_by"]),
            fmt.count(r["n"]),
            fmt.ms(r["p50"]),
            fmt.ms(r["p95"]),
        )
        for r in data.latency
    ]
    return f'<div class="panel">{title}{table(head, rows)}</div>'


def passthrough_table(data: DashboardData) -> str:
    """Relayed calls (embeddings, files, audio, ...) per endpoint family: metered, never
    distilled."""
    title = "<h3>Passed through to the teacher</h3>"
    found = data.summary.passthrough
    if not found:
        return f'<div class="panel">{title}<div class="empty">no relayed calls</div></div>'
    head = (("endpoint", ""),) + tuple(
        (name, "num")
        for name in (
            "requests",
            "failed",
            "tokens",
            "teacher spend",
            "bytes in",
            "bytes out",
            "mean latency",
        )
    )
    rows = [
        (
            escape(r["endpoint"]),
            fmt.count(r["requests"]),
            fmt.count(r["failed"] or 0),
            fmt.count(r["tokens"]),
            fmt.usd(r["teacher_spend_usd"]),
            fmt.count(r["bytes_in"]),
            fmt.count(r["bytes_out"]),
            fmt.ms(r["mean_latency_ms"]),
        )
        for r in found
    ]
    return f'<div class="panel" id="passthrough">{title}{table(head, rows)}</div>'


def runs_table(data: DashboardData) -> str:
    title = "<h3>Recent distill runs</h3>"
    if not data.runs:
        return f'<div class="panel">{title}<div class="empty">no distill runs yet</div></div>'
    rows = []
    for r in data.runs:
        outcome = _outcome(r)
        metrics = r.get("metrics") or {}
        took = (
            fmt.duration(round(r["finished_at"] - r["started_at"]))
            if r.get("finished_at")
            else "running"
        )
        rows.append(
            (
                fmt.short_time(r["started_at"]),
                escape(r["task"]),
                f"<span class='pill {RUN_PILL.get(outcome, 'idle')}'>{escape(outcome)}</span>",
                fmt.pct(metrics.get("agreement")),
                fmt.pct(metrics.get("coverage")),
                escape(took),
                escape((r.get("reason") or "")[:70]),
            )
        )
    head = (
        ("started", "nowrap"),
        ("task", "nowrap"),
        ("outcome", ""),
        ("agreement", "num"),
        ("coverage", "num"),
        ("took", "num nowrap"),
        ("why", "muted"),
    )
    return f'<div class="panel" id="runs">{title}{table(head, rows)}</div>'


def table(head: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]]) -> str:
    """A table whose cells carry their column's name (``data-label``): on a narrow screen
    each row is stacked as label / value lines instead of running off the side."""
    ths = "".join(f"<th class='{cls}'>{escape(name)}</th>" for name, cls in head)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='{cls}' data-label='{escape(name)}'>{cell}</td>"
            for (name, cls), cell in zip(head, row, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table class='rt'><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>"


def _outcome(run: dict[str, Any]) -> str:
    if run.get("promoted"):
        return "promoted"
    if run.get("status") == "succeeded":
        return "rejected"
    return str(run.get("status") or "unknown")
