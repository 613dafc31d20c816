"""Monthly budgets and /metrics' log totals are exact across processes writing one log: they
read the rollups (budgets add only what this process logged that a read has not seen yet)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from understudy.gateway.accounting.metrics_state import LogTotalsCollector
from understudy.gateway.api.limits import MonthlyBudgets
from understudy.storage.database import Store
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter, write_rows


def row(rid: str, key: str, tokens: int, usd: float = 0.0) -> dict:
    return RequestRecord(
        id=rid,
        created_at=time.time(),
        endpoint="chat",
        task="t",
        task_source="header",
        requested_model="m",
        served_by="teacher",
        status="ok",
        request_json="{}",
        total_tokens=tokens,
        teacher_cost_usd=usd,
        api_key_id=key,
    ).as_row()


def other_worker_logs(path: Path, prefix: str, rows: int, tokens: int) -> None:
    """Another gateway process writing to the same log through its own writer."""
    script = textwrap.dedent(
        f"""
        import time
        from understudy.storage.request_log import RequestLogWriter, write_rows
        writer = RequestLogWriter({str(path)!r})
        writer.start()
        for i in range({rows}):
            writer.submit("requests", {{
                "id": f"{prefix}{{i}}", "created_at": time.time(), "endpoint": "chat",
                "task": "t", "task_source": "header", "served_by": "teacher", "status": "ok",
                "request_json": "{{}}", "total_tokens": {tokens}, "teacher_cost_usd": 0.01,
                "api_key_id": "key_a",
            }})
        writer.close()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_a_budget_counts_every_workers_usage_once(tmp_path):
    path = tmp_path / "u.db"
    writer = RequestLogWriter(path, commit_interval_ms=5)
    writer.start()
    budgets = MonthlyBudgets(monthly_tokens=1000, monthly_usd=0.0, refresh_s=3600)
    writer.add_listener(budgets.record)
    budgets.load(Store(path))
    assert budgets.used("key_a") == (0, 0.0)

    other_worker_logs(path, "w2-", rows=6, tokens=50)  # 300 tokens logged by another process
    budgets.refresh()
    tokens, usd = budgets.used("key_a")
    assert tokens == 300 and abs(usd - 0.06) < 1e-9

    for i in range(4):  # 200 tokens here: counted at once, before they are written
        writer.submit("requests", row(f"w1-{i}", "key_a", 50))
    assert budgets.used("key_a")[0] == 500
    assert writer.flush()
    budgets.refresh()  # now in the rollups too: still counted once
    assert budgets.used("key_a")[0] == 500
    assert budgets.check("key_a") is None

    other_worker_logs(path, "w3-", rows=10, tokens=50)  # the other worker spends the rest
    budgets.refresh()
    assert budgets.used("key_a")[0] == 1000
    assert budgets.check("key_a") == "1000 tokens"
    assert budgets.used("key_b") == (0, 0.0)
    writer.close()


def test_the_budget_rereads_the_log_off_the_request_path(tmp_path):
    path = tmp_path / "u.db"
    Store(path).migrate()
    budgets = MonthlyBudgets(monthly_tokens=100, refresh_s=0.0)
    budgets.load(Store(path))
    other_worker_logs(path, "w2-", rows=3, tokens=40)
    deadline = time.monotonic() + 10
    while budgets.check("key_a") is None and time.monotonic() < deadline:
        time.sleep(0.02)  # each check starts a refresh on a thread when the last is stale
    assert budgets.check("key_a") == "100 tokens"
    assert budgets.used("key_a")[0] == 120


def scraped(collector: LogTotalsCollector) -> dict[tuple[str, str, str], float]:
    return {
        (family.name, sample.labels["task"], sample.labels["served_by"]): sample.value
        for family in collector.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_metrics_count_every_workers_requests_once_per_scrape(tmp_path):
    path = tmp_path / "u.db"
    Store(path).migrate()
    now = time.time()
    old = {**row("old", "key_a", 10, 0.5), "created_at": now - 5 * 3600}
    with Store(path).write() as db:
        write_rows(db, "requests", [old, {**row("failed", None, 1), "status": "error"}])
    collector = LogTotalsCollector(path)
    first = scraped(collector)
    assert first[("understudy_logged_requests", "t", "teacher")] == 2
    assert first[("understudy_logged_failures", "t", "teacher")] == 1
    assert first[("understudy_logged_teacher_spend_usd", "t", "teacher")] == 0.5
    other_worker_logs(path, "w2-", rows=3, tokens=5)
    again = scraped(collector)  # the old hour is kept, the recent ones read again
    assert again[("understudy_logged_requests", "t", "teacher")] == 5
    assert again[("understudy_logged_teacher_spend_usd", "t", "teacher")] == pytest.approx(0.53)
    assert scraped(collector) == again
