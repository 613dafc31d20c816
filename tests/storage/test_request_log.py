import sqlite3
import threading
import time

from understudy.storage.database import open_database
from understudy.storage.migrations import MIGRATIONS, applied
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter


def record(i: int) -> dict:
    return RequestRecord(
        id=f"req_{i}",
        created_at=time.time(),
        endpoint="chat.completions",
        task="t",
        task_source="header",
        requested_model="m",
        served_by="teacher",
        status="ok",
        request_json="{}",
        response_json="{}",
    ).as_row()


def count(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("select count(*) from requests").fetchone()[0]
    finally:
        conn.close()


def test_migrations_run_once_and_wal_is_on(tmp_path):
    db = open_database(tmp_path / "u.db")
    assert applied(db) == [name for name, _ in MIGRATIONS]
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    db.conn.close()
    db = open_database(tmp_path / "u.db")
    assert applied(db) == [name for name, _ in MIGRATIONS]
    assert {
        "requests",
        "student_attempts",
        "feedback",
        "models",
        "distill_runs",
        "eval_results",
    } <= set(db.table_names())


def test_rows_are_committed_within_the_interval_and_close_flushes(tmp_path):
    path = tmp_path / "u.db"
    writer = RequestLogWriter(path, commit_interval_ms=20)
    writer.start()
    writer.submit("requests", record(0))
    deadline = time.monotonic() + 2
    while count(path) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert count(path) == 1  # committed without any flush or close
    for i in range(1, 5000):
        writer.submit("requests", record(i))
    writer.close()
    assert count(path) == 5000
    assert writer.stats().dropped == 0


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    writer = RequestLogWriter(tmp_path / "u.db", queue_size=10, commit_interval_ms=100)
    # Not started: nothing drains the queue.
    started = time.perf_counter()
    results = [writer.submit("requests", record(i)) for i in range(25)]
    assert time.perf_counter() - started < 0.5
    assert results.count(True) == 10 and writer.dropped == 15


def test_locked_database_keeps_rows_and_resumes(tmp_path):
    path = tmp_path / "u.db"
    writer = RequestLogWriter(path, commit_interval_ms=10, busy_timeout_ms=50)
    writer.start()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("begin exclusive")
    for i in range(20):
        assert writer.submit("requests", record(i))
    deadline = time.monotonic() + 3
    while writer.healthy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not writer.healthy and "locked" in (writer.last_error or "")
    assert writer.check_writable(timeout_s=0.05) is not None
    locker.execute("rollback")
    locker.close()
    assert writer.flush(timeout=5)
    assert writer.healthy and count(path) == 20 and writer.dropped == 0
    writer.close()


def test_submit_is_thread_safe(tmp_path):
    path = tmp_path / "u.db"
    writer = RequestLogWriter(path, commit_interval_ms=5)
    writer.start()

    def produce(k: int) -> None:
        for i in range(500):
            writer.submit("requests", record(k * 1000 + i))

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert count(path) == 2000
