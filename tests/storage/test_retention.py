"""Retention: old traffic rows are deleted in batches; everything else is kept."""

from __future__ import annotations

import time

import pytest

from understudy.cli import main
from understudy.storage.database import open_database
from understudy.storage.records import RequestRecord
from understudy.storage.registry import register_model
from understudy.storage.request_log import RequestLogWriter
from understudy.storage.retention import DAY_S, RetentionWorker, count_older, parse_age, prune

NOW = time.time()


def request_row(i: int, created_at: float) -> dict:
    return RequestRecord(
        id=f"req_{i}",
        created_at=created_at,
        endpoint="chat.completions",
        task="t",
        task_source="header",
        requested_model="m",
        served_by="teacher",
        status="ok",
        request_json="{}",
    ).as_row()


def fill(db, old: int, new: int) -> None:
    """``old`` rows of each pruned table 100 days old, ``new`` rows one day old."""
    rows = [request_row(i, NOW - 100 * DAY_S) for i in range(old)]
    rows += [request_row(old + i, NOW - DAY_S) for i in range(new)]
    with db.conn:
        db["requests"].insert_all(rows)
        db["student_attempts"].insert_all(
            {
                "request_id": r["id"],
                "created_at": r["created_at"],
                "task": "t",
                "student_version": "t@v1",
                "kind": "served",
            }
            for r in rows
        )
        db["feedback"].insert_all(
            {"request_id": r["id"], "created_at": r["created_at"], "score": 1.0} for r in rows
        )


def counts(db) -> dict[str, int]:
    return {t: db[t].count for t in ("requests", "student_attempts", "feedback")}


def test_parse_age():
    assert parse_age("90d") == 90 * DAY_S
    assert parse_age("12h") == 12 * 3600
    assert parse_age(" 30m ") == 1800
    assert parse_age("2w") == 14 * DAY_S
    assert parse_age("1.5s") == 1.5
    for bad in ("90", "d", "-1d", "90 days", "", "1y"):
        with pytest.raises(ValueError):
            parse_age(bad)


def test_prune_deletes_only_old_rows_in_batches(address):
    db = open_database(address)
    fill(db, old=1234, new=56)
    model = register_model(db, "t", base="tiny")
    cutoff = NOW - 90 * DAY_S
    assert count_older(db, cutoff) == {"requests": 1234, "student_attempts": 1234, "feedback": 1234}
    deleted = prune(db, cutoff, batch_size=100)
    assert deleted == {"requests": 1234, "student_attempts": 1234, "feedback": 1234}
    assert counts(db) == {"requests": 56, "student_attempts": 56, "feedback": 56}
    assert min(r["created_at"] for r in db["requests"].rows) > cutoff
    assert db["models"].get(model.id)["task"] == "t"  # the registry is never pruned
    assert prune(db, cutoff) == {"requests": 0, "student_attempts": 0, "feedback": 0}


def test_prune_stops_between_batches_when_asked(address):
    db = open_database(address)
    fill(db, old=500, new=0)
    calls = []
    deleted = prune(db, NOW, batch_size=100, should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert deleted["requests"] == 200 and db["requests"].count == 300


def test_the_log_writer_keeps_writing_while_retention_runs(address):
    path = address
    db = open_database(path)
    fill(db, old=20000, new=0)
    db.conn.close()
    writer = RequestLogWriter(path, commit_interval_ms=10, busy_timeout_ms=2000)
    writer.start()
    worker = RetentionWorker(path, max_age_s=90 * DAY_S, interval_s=3600, batch_size=500)
    worker.start()
    try:
        for i in range(300):
            writer.submit("requests", request_row(100000 + i, time.time()))
            time.sleep(0.001)
        assert writer.flush(10)
        deadline = time.monotonic() + 20
        while worker.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        writer.close()
    assert worker.runs == 1 and worker.last_error is None
    assert worker.deleted == {"requests": 20000, "student_attempts": 20000, "feedback": 20000}
    stats = writer.stats()
    assert stats.written == 300 and stats.dropped == 0
    db = open_database(path)
    assert db.execute("select count(*) from requests").fetchone()[0] == 300
    db.conn.close()


def test_prune_command(tmp_path, capsys):
    data = tmp_path / "data"
    db = open_database(data / "understudy.db")
    fill(db, old=30, new=7)
    db.conn.close()
    assert main(["prune", "--data-dir", str(data), "--older-than", "90d", "--dry-run"]) == 0
    assert "would delete 30 requests, 30 student_attempts, 30 feedback" in capsys.readouterr().out
    assert main(["prune", "--data-dir", str(data), "--older-than", "90d", "--vacuum"]) == 0
    assert "deleted 30 requests, 30 student_attempts, 30 feedback" in capsys.readouterr().out
    db = open_database(data / "understudy.db")
    assert counts(db) == {"requests": 7, "student_attempts": 7, "feedback": 7}
    db.conn.close()
    assert main(["prune", "--data-dir", str(data), "--older-than", "ninety"]) == 2
    assert "not an age" in capsys.readouterr().err
