"""The dashboard page: headline numbers first, then charts over time, then the students.

Plain server-rendered HTML with inline CSS and SVG; the only script is the rollback button's.
"""

from __future__ import annotations

from html import escape

from understudy.gateway.accounting import fmt
from understudy.gateway.accounting.summary import Summary, describe_window, projection_note
from understudy.gateway.api.dashboard import svg
from understudy.gateway.api.dashboard.data import DashboardData
from understudy.gateway.api.dashboard.sections import (
    latency_table,
    passthrough_table,
    runs_table,
    student_cards,
)
from understudy.gateway.api.dashboard.style import CSS

REFRESH_S = 30
NO_STUDENT = "no student has served yet: lines appear once a student is promoted"
WINDOWS = (("1h", 3600.0), ("24h", 86400.0), ("7d", 7 * 86400.0), ("30d", 30 * 86400.0))
BUCKET_WORDS = {60.0: "minute", 3600.0: "hour", 86400.0: "day"}
FRAMES = (svg.Frame(cls="wide"), svg.Frame(width=360, height=240, left=56, right=14, cls="narrow"))
"""Each chart twice: for a wide screen, and for a phone (its labels stay readable there)."""

ROLLBACK_JS = """
document.querySelectorAll('button.rollback').forEach(function (b) {
  b.addEventListener('click', function () {
    if (!confirm('Roll ' + b.dataset.task + ' back to ' + b.dataset.to + '?')) return;
    b.disabled = true;
    fetch('/dashboard/rollback/' + encodeURIComponent(b.dataset.task), {method: 'POST',
      headers: {'x-understudy-dashboard': '1'}, credentials: 'same-origin'})
      .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (res) {
        if (res[0]) { location.reload(); return; }
        alert((res[1].error && res[1].error.message) || 'rollback failed'); b.disabled = false;
      }).catch(function () { alert('rollback failed'); b.disabled = false; });
  });
});
"""


def render_page(data: DashboardData, *, window: str, admin: bool, nonce: str) -> str:
    colors = {task: svg.color_for(i) for i, task in enumerate(_task_order(data))}
    body = [
        _header(data, window),
        "<main>",
        _headline(data.summary),
        _tiles(data),
        _strip(data),
        '<h2>Over time</h2><div class="grid2">',
        _savings_chart(data, colors),
        _coverage_chart(data, colors),
        "</div>",
        "<h2>Students</h2>",
        student_cards(data, admin=admin, colors=colors),
        '<div class="grid2" style="margin-top:14px">',
        latency_table(data),
        runs_table(data),
        "</div>",
        '<div style="margin-top:14px">',
        passthrough_table(data),
        "</div>",
        _footer(data, admin),
        "</main>",
    ]
    script = f'<script nonce="{nonce}">{ROLLBACK_JS}</script>' if admin else ""
    return _document("Understudy", "".join(body) + script, refresh=True)


def render_login(message: str | None = None) -> str:
    error = f'<p class="error">{escape(message)}</p>' if message else ""
    form = (
        '<form class="login" method="post" action="/dashboard/login">'
        "<h2 style='margin-top:0'>Understudy dashboard</h2>"
        "<p class='muted'>Enter the admin key to continue.</p>"
        f"{error}"
        '<input type="password" name="key" autocomplete="current-password" autofocus '
        'aria-label="admin key" placeholder="admin key">'
        "<button type='submit'>Sign in</button></form>"
    )
    return _document("Understudy: sign in", form, refresh=False)


def render_closed() -> str:
    """The page of a dashboard that is closed: clients need keys and ``admin_key`` is not set."""
    body = (
        '<div class="login"><h2 style="margin-top:0">Understudy dashboard</h2>'
        "<p>The dashboard is closed: this gateway asks its clients for keys, and no "
        "<code>admin_key</code> is set. Set <code>admin_key</code> to open it.</p></div>"
    )
    return _document("Understudy: dashboard closed", body, refresh=False)


def _document(title: str, body: str, *, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"{meta}<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


def _task_order(data: DashboardData) -> list[str]:
    names = {t.task for t in data.summary.tasks} | {c.task for c in data.students}
    return sorted(names | set(data.saved) | set(data.coverage))  # with the charts' shared line


def _header(data: DashboardData, window: str) -> str:
    links = "".join(
        f'<a href="?window={name}"{" class=on" if name == window else ""}>{name}</a>'
        for name, _ in WINDOWS
    )
    return (
        "<header><h1>Understudy</h1>"
        f'<span class="sub" id="window">{escape(describe_window(data.summary))}'
        f" · refreshes every {REFRESH_S} s</span>"
        f'<nav aria-label="window">{links}</nav></header>'
    )


def _headline(s: Summary) -> str:
    """The saving at a glance: the amount, and its share of what the teacher alone would have
    cost over the same window."""
    cls = "good" if s.saved_usd > 0 else ("bad" if s.saved_usd < 0 else "")
    label = "Saved (estimate)" if s.estimated else "Saved"
    if s.saved_share is None:
        share = "no teacher cost in this window yet"
    else:
        share = (
            f"<b>{fmt.pct(s.saved_share)}</b> of the <b>{fmt.usd(s.teacher_alone_usd)}</b>"
            " the teacher alone would have cost"
        )
    estimate = (
        f" · estimate: {fmt.count(s.estimated)} student answers valued before the token ratio"
        " was learned"
        if s.estimated
        else ""
    )
    note = (
        f"avoided {fmt.usd(s.avoided_usd)} - student {fmt.usd(s.student_cost_usd)}"
        f" - shadow checks {fmt.usd(s.shadow_spend_usd)}{estimate}"
    )
    return (
        '<section class="hero" id="tile-saved">'
        f'<div class="label">{label} · last {escape(fmt.duration(s.window_s))}</div>'
        f'<div class="value {cls}">{escape(fmt.usd(s.saved_usd))}</div>'
        f'<div class="share" id="saved-share">{share}</div>'
        f'<div class="note">{escape(note)}</div></section>'
    )


def _tiles(data: DashboardData) -> str:
    s = data.summary
    target = s.quality_target
    if s.agreement is None:
        agree_cls, agree_note = "", f"no shadow comparisons yet · target {fmt.pct(target)}"
    else:
        ok = s.agreement >= target
        agree_cls = "good" if ok else "bad"
        verdict = "on target" if ok else "below target"
        where = "served tasks" if s.agreement_scope == "served" else "shadow-mode tasks"
        agree_note = (
            f"{verdict} {fmt.pct(target)} · {fmt.count(s.compared)} shadow comparisons on {where}"
        )
    saved_cls = "good" if s.saved_usd > 0 else ("bad" if s.saved_usd < 0 else "")
    tiles = [
        (
            "Teacher spend",
            fmt.usd(s.teacher_spend_usd),
            "",
            f"instead of {fmt.usd(s.teacher_alone_usd)} without the student · shadow checks "
            f"{fmt.usd(s.shadow_spend_usd)}",
            "spend",
        ),
        (
            "Projected monthly savings",
            fmt.usd(s.projected_monthly_usd),
            saved_cls,
            projection_note(s),
            "projected",
        ),
        (
            "Coverage",
            fmt.pct(s.coverage),
            "",
            f"{fmt.count(s.student)} of {fmt.count(s.requests)} requests served by the student",
            "coverage",
        ),
        ("Live agreement", fmt.pct(s.agreement), agree_cls, agree_note, "agreement"),
    ]
    html = "".join(
        f'<div class="tile" id="tile-{key}"><div class="label">{escape(label)}</div>'
        f'<div class="value {cls}">{escape(value)}</div>'
        f'<div class="note">{escape(note)}</div></div>'
        for label, value, cls, note, key in tiles
    )
    return f'<section class="tiles">{html}</section>'


def _strip(data: DashboardData) -> str:
    s = data.summary
    student_cost = "free (no student price set)" if s.student_free else fmt.usd(s.student_cost_usd)
    items = [
        ("requests", fmt.count(s.requests)),
        ("deferred to the teacher", fmt.count(s.deferred)),
        ("shadow checks", fmt.count(s.shadow_calls)),
        ("student cost", student_cost),
        ("tasks", fmt.count(len(s.tasks))),
    ]
    return (
        '<div class="strip">'
        + "".join(f"<div><span>{escape(k)}</span> <b>{escape(v)}</b></div>" for k, v in items)
        + "</div>"
    )


def _legend(names: list[str], colors: dict[str, str]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{colors[n]}"></i>{escape(n)}</span>' for n in names)
        + "</div>"
    )


def _savings_chart(data: DashboardData, colors: dict[str, str]) -> str:
    title = "<h3>Cumulative savings per task</h3>"
    names = _student_tasks(data, data.saved)
    if not names:
        return f'<div class="panel">{title}<div class="empty">{NO_STUDENT}</div></div>'
    series = []
    for task in names:
        running, points = 0.0, []
        for v in data.saved[task]:
            running += v
            points.append(running)
        series.append(svg.Series(task, colors[task], points))
    chart = "".join(
        svg.line_chart(
            data.buckets,
            series,
            y_format=fmt.usd,
            tick_labels=fmt.axis_usd,
            label="cumulative savings",
            frame=frame,
        )
        for frame in FRAMES
    )
    return f'<div class="panel">{title}{_legend(names, colors)}{chart}</div>'


def _coverage_chart(data: DashboardData, colors: dict[str, str]) -> str:
    title = "<h3>Coverage per task (share served by the student)</h3>"
    names = _student_tasks(data, data.coverage)
    if not names:
        return f'<div class="panel">{title}<div class="empty">{NO_STUDENT}</div></div>'
    series = [svg.Series(t, colors[t], data.coverage[t]) for t in names]
    chart = "".join(
        svg.line_chart(
            data.buckets,
            series,
            y_format=lambda v: f"{v * 100:.0f}%",
            label="coverage",
            y_min=0.0,
            y_max=1.0,
            frame=frame,
        )
        for frame in FRAMES
    )
    return f'<div class="panel">{title}{_legend(names, colors)}{chart}</div>'


def _student_tasks(data: DashboardData, series: dict[str, list]) -> list[str]:
    """Tasks worth a line: those with a student, or that a student served in the window."""
    with_student = {c.task for c in data.students if c.champion is not None}
    return sorted(t for t, values in series.items() if t in with_student or any(values))


def _footer(data: DashboardData, admin: bool) -> str:
    who = "signed in as admin" if admin else "read-only"
    bucket = BUCKET_WORDS.get(data.bucket_s, fmt.duration(data.bucket_s))
    terms = "".join(
        f"<dt>{escape(name)}</dt><dd>{escape(meaning)}</dd>"
        for name, meaning in data.summary.definitions.items()
    )
    return (
        f"<footer><p>Every figure covers the {escape(describe_window(data.summary))}, the same"
        " as <code>understudy report</code> and <code>understudy tasks</code> with"
        f" <code>--since {escape(fmt.duration(data.window_s))}</code>; chart points are per"
        f" {escape(bucket)} of it. A deferral costs the student's time.</p>"
        f'<dl class="defs">{terms}</dl>'
        f"<p>Prometheus metrics at <a href='/metrics'>/metrics</a>. {who}.</p></footer>"
    )
