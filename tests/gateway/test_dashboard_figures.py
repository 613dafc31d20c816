"""What the dashboard, ``understudy report`` and the demo say about one window: savings as an
amount and a share, a projection computed over the span it names, readable axis ticks, points
fine enough for a short window, and no event that changed nothing."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest

from understudy.demo.report import gateway_lines
from understudy.gateway.accounting import fmt
from understudy.gateway.accounting.summary import counted_span, summarize
from understudy.gateway.api.dashboard import svg
from understudy.gateway.api.dashboard.data import bucket_size, gather
from understudy.gateway.api.dashboard.page import WINDOWS, render_page
from understudy.gateway.config import GatewayConfig
from understudy.storage.database import Store, open_database
from understudy.storage.records import RequestRecord
from understudy.storage.registry import promote, register_model, set_mode
from understudy.storage.request_log import write_rows

HOUR = 3600.0


def _row(served_by: str, at: float, **costs: float) -> dict:
    return RequestRecord(
        id=f"req_{served_by}_{at}",
        created_at=at,
        endpoint="chat.completions",
        task="intent",
        task_source="header",
        requested_model="gpt-4o",
        served_by=served_by,
        status="ok",
        request_json="{}",
        response_json="{}",
        http_status=200,
        **costs,  # type: ignore[arg-type]
    ).as_row()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A demo-like log of the last ten minutes: 8 teacher answers ($0.001 each), 2 student
    answers (avoiding $0.001 each) and one shadow check ($0.0004)."""
    path = tmp_path / "understudy.db"
    db = open_database(path)
    start = time.time() - 600
    rows = [_row("teacher", start + i, teacher_cost_usd=0.001) for i in range(8)]
    rows += [
        _row("student", start + 100 + i, avoided_cost_usd=0.001, saved_usd=0.001) for i in range(2)
    ]
    rows.append(_row("shadow", start + 200, teacher_cost_usd=0.0004, saved_usd=-0.0004))
    write_rows(db, "requests", rows)
    db.conn.close()
    return path


def test_savings_are_an_amount_and_a_share_of_what_the_teacher_alone_would_have_cost(db_path):
    with Store(db_path).read() as db:
        s = summarize(db, window_s=86400, quality_target=0.9, student_free=True)
    assert (s.requests, s.student, s.shadow_calls) == (10, 2, 1)  # the shadow check is no request
    assert s.saved_usd == pytest.approx(0.0016)
    # The teacher alone: its 8 answers ($0.008) + the 2 it was spared ($0.002).
    assert s.teacher_alone_usd == pytest.approx(0.010)
    assert s.saved_share == pytest.approx(0.16)


def test_the_projection_is_computed_over_the_span_it_names(db_path):
    # Found: "projected monthly ... at the rate of the last 10m 55s" was computed over a day.
    now = time.time()
    with Store(db_path).read() as db:
        s = summarize(db, window_s=3600, quality_target=0.9, student_free=True, now=now)
    # The log is summed per minute (recent) or hour: the span counted is stated as counted.
    assert s.since == counted_span(now - 3600, now, time.time())[0] <= now - 3600
    assert s.counted_s == pytest.approx(s.until - s.since)
    assert s.projected_monthly_usd == pytest.approx(s.saved_usd / s.counted_s * 30 * 86400)
    page = _page(db_path, "1h")
    note = re.search(r'id="tile-projected".*?class="note">([^<]+)<', page, re.S)
    assert note is not None
    factor = 30 * 86400 / s.counted_s
    assert note.group(1) == (
        f"the savings of these {fmt.duration(s.counted_s)} x {factor:.3g} (30 days)"
    )


def test_the_headline_shows_the_saving_and_its_share_and_the_window(db_path):
    page = _page(db_path, "24h")
    hero = re.search(r'<section class="hero" id="tile-saved">(.*?)</section>', page, re.S)
    assert hero is not None
    text = re.sub(r"<[^>]+>", "", hero.group(1))
    assert "Saved · last 24h$0.002" in text
    assert "16.0% of the $0.010 the teacher alone would have cost" in text
    window = re.search(r'id="window">([^<]+)<', page)
    assert window is not None and window.group(1).startswith("last 24h: ")
    for term in ("requests", "coverage", "saved", "teacher alone", "projected monthly"):
        assert f"<dt>{term}</dt>" in page  # each figure's definition is on the page


@pytest.mark.parametrize(
    "ticks",
    [[0, 0.002, 0.004, 0.006, 0.008, 0.01], [0, 0.0025, 0.005, 0.0075, 0.01], [0, 0.25, 0.5]],
)
def test_axis_ticks_are_distinct_and_exact(ticks):
    # Found: the savings axis read $0.01, $0.01, $0.01, $0.00, $0.00.
    labels = fmt.axis_usd(ticks)
    assert len(set(labels)) == len(labels)
    assert [float(label.lstrip("$").replace(",", "")) for label in labels] == pytest.approx(ticks)


def test_the_savings_chart_axis_of_a_small_saving_reads_distinct_amounts():
    values = [0.0, 0.0012, 0.0031, 0.0058, 0.0083]
    chart = svg.line_chart(
        [i * HOUR for i in range(len(values))],
        [svg.Series("intent", "#000", values)],
        y_format=fmt.usd,
        tick_labels=fmt.axis_usd,
        label="cumulative savings",
    )
    left = svg.Frame().left - 8  # the y axis labels' x
    ticks = re.findall(rf'<text x="{left}" [^>]*text-anchor="end"[^>]*>([^<]+)<', chart)
    assert ticks == ["$0.0000", "$0.0025", "$0.0050", "$0.0075", "$0.0100"]


def test_durations_name_both_units():
    assert fmt.duration(86400 + 22 * 60) == "24h 22m"  # not "1.0d"
    assert (fmt.duration(86400), fmt.duration(3 * 86400 + 4 * 3600 + 5)) == ("24h", "3d 4h")
    assert fmt.duration(655) == "10m 55s"
    assert (fmt.duration(7 * 86400), fmt.duration(1260)) == ("7d", "21m")


def test_short_windows_have_hourly_points_and_a_last_hour_window():
    # Found: with the 7d window a whole demo fell into one daily point.
    assert dict(WINDOWS)["1h"] == 3600
    assert bucket_size(3600) == 60  # the last hour minute by minute
    assert bucket_size(86400) == bucket_size(7 * 86400) == HOUR
    assert bucket_size(30 * 86400) == 86400


def test_the_charts_sum_the_headlines_rows(db_path):
    data = gather(Store(db_path), GatewayConfig(), 86400)
    assert data.buckets[0] == data.summary.since and data.bucket_s == HOUR
    assert sum(data.saved["intent"]) == pytest.approx(data.summary.saved_usd)


def test_an_event_that_changed_nothing_is_not_listed(db_path):
    # Found: "mode routed → routed" among a task's events.
    db = open_database(db_path)
    model = register_model(db, "intent", base="tiny", model_path="/nowhere", router={})
    promote(db, model.id, reason="test")
    set_mode(db, "intent", "shadow", reason="operator")
    set_mode(db, "intent", "routed", reason="operator")
    set_mode(db, "intent", "routed", reason="the demo routes its student")
    db.conn.close()
    page = _page(db_path, "24h")
    assert "mode shadow → routed (operator)" in page
    assert "routed → routed" not in page


def test_the_demo_prints_the_gateways_figures(db_path):
    with Store(db_path).read() as db:
        s = summarize(db, window_s=3 * HOUR, quality_target=0.9, student_free=True)
    text = "\n".join(gateway_lines(s, history=6, live=4, late_share=0.5))
    assert "requests              10 (6 history + 4 live)" in text
    assert "served by the student 2: coverage 20.0% of all requests; 50.0% of the 4 live" in text
    assert "teacher calls         8 answers + 1 shadow checks" in text
    assert "saved                 $0.002: 16.0% of the $0.010 the teacher alone" in text
    assert "teacher spend $0.008" in text


def _page(db_path: Path, window: str) -> str:
    data = gather(Store(db_path), GatewayConfig(), dict(WINDOWS)[window])
    return render_page(data, window=window, admin=False, nonce="n")


def test_a_log_of_many_tasks_charts_the_top_ones_and_sums_the_rest(tmp_path):
    """Found at 1M logged requests over 44 tasks: every task drew its own line in both charts,
    twice (wide and narrow frames), a 3.4 MB page. The tasks that saved most keep their lines;
    the others are one line whose points are their sums, so the chart still sums the headline."""
    from understudy.gateway.api.dashboard.data import CHARTED_TASKS, other_tasks

    path = tmp_path / "understudy.db"
    db = open_database(path)
    # within the previous UTC hour: the day window's hourly points never split one task's
    # requests between two points (which would chart that hour's share, not 0.75)
    start = (time.time() // 3600 - 1) * 3600 + 60
    rows = []
    for t in range(20):
        for i in range(3):
            row = _row("student", start + 60 * t + i, avoided_cost_usd=0.001, saved_usd=0.001 * t)
            rows.append({**row, "id": f"req_{t}_{i}", "task": f"task-{t:02d}"})
        teacher = _row("teacher", start + 60 * t + 5, teacher_cost_usd=0.001)
        rows.append({**teacher, "id": f"req_{t}_t", "task": f"task-{t:02d}"})
    write_rows(db, "requests", rows)
    db.conn.close()

    data = gather(Store(path), GatewayConfig(), 86400)
    rest = other_tasks(20 - (CHARTED_TASKS - 1))
    assert len(data.saved) == CHARTED_TASKS and rest in data.saved
    top = {f"task-{t:02d}" for t in range(19, 19 - (CHARTED_TASKS - 1), -1)}
    assert set(data.saved) - {rest} == top  # the tasks that saved most
    assert sum(map(sum, data.saved.values())) == pytest.approx(data.summary.saved_usd)
    assert max(v for v in data.coverage[rest] if v is not None) == pytest.approx(0.75)
    page = render_page(data, window="24h", admin=True, nonce="n")
    charts = page.split("Cumulative savings per task", 1)[1].split("<h2>Students</h2>", 1)[0]
    assert rest in charts and "task-19" in charts and "task-00" not in charts


def test_the_30_day_charts_have_a_point_per_utc_day_summing_its_rows(tmp_path):
    # Found: day points started at the window's start, not at midnight UTC, so a 30-day chart
    # summed 720 hours of hourly sums instead of the daily ones.
    path = tmp_path / "understudy.db"
    db = open_database(path)
    now = time.time()
    times = [now - 29.5 * 86400 + i * 7919.0 for i in range(320)]
    write_rows(
        db, "requests", [_row("student", at, avoided_cost_usd=0.01, saved_usd=0.01) for at in times]
    )
    db.conn.close()
    data = gather(Store(path), GatewayConfig(), 30 * 86400, now=now)
    assert data.bucket_s == 86400 and data.buckets[0] == data.summary.since
    assert all(b % 86400 == 0 for b in data.buckets[1:])
    assert data.buckets[-1] <= now < data.buckets[-1] + 86400
    edges = [*data.buckets[1:], math.inf]
    per_day = [
        sum(1 for at in times if start <= at < end)
        for start, end in zip(data.buckets, edges, strict=True)
    ]
    assert data.saved["intent"] == pytest.approx([0.01 * n for n in per_day])
    assert sum(data.saved["intent"]) == pytest.approx(data.summary.saved_usd) == 3.2
