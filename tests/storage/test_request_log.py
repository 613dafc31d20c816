import sqlite3
import threading
import time

from understudy.storage.database import open_database
from understudy.storage.engine import is_postgres
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


def count(address) -> int:
    db = open_database(address, migrate_schema=False)
    try:
        return db.execute("select count(*) from requests").fetchone()[0]
    finally:
        db.conn.close()


class Locker:
    """Another connection holding a write lock on the log (SQLite: the whole file; PostgreSQL:
    the requests table), so that the writer's statements wait and time out."""

    def __init__(self, address) -> None:
        self.address = address
        if is_postgres(address):
            import psycopg

            self.conn = psycopg.connect(address, autocommit=True)
            self.conn.execute("begin")
            self.conn.execute("lock table requests in access exclusive mode")
        else:
            self.conn = sqlite3.connect(address, isolation_level=None)
            self.conn.execute("begin exclusive")

    def release(self) -> None:
        self.conn.execute("rollback")
        self.conn.close()


def test_migrations_run_once_and_wal_is_on(address):
    db = open_database(address)
    assert applied(db) == [name for name, _ in MIGRATIONS]
    if not is_postgres(address):
        assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    db.conn.close()
    db = open_database(address)
    assert applied(db) == [name for name, _ in MIGRATIONS]
    assert {
        "requests",
        "student_attempts",
        "feedback",
        "models",
        "distill_runs",
        "eval_results",
    } <= set(db.table_names())


def test_rows_are_committed_within_the_interval_and_close_flushes(address):
    path = address
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


def test_full_queue_drops_and_counts_without_blocking(address):
    writer = RequestLogWriter(address, queue_size=10, commit_interval_ms=100)
    # Not started: nothing drains the queue.
    started = time.perf_counter()
    results = [writer.submit("requests", record(i)) for i in range(25)]
    assert time.perf_counter() - started < 0.5
    assert results.count(True) == 10 and writer.dropped == 15


def test_locked_database_keeps_rows_and_resumes(address):
    path = address
    writer = RequestLogWriter(path, commit_interval_ms=10, busy_timeout_ms=50)
    writer.start()
    locker = Locker(path)
    for i in range(20):
        assert writer.submit("requests", record(i))
    deadline = time.monotonic() + 3
    while writer.healthy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not writer.healthy and "lock" in (writer.last_error or "")
    assert writer.check_writable(timeout_s=0.05) is not None
    locker.release()
    assert writer.flush(timeout=5)
    assert writer.healthy and count(path) == 20 and writer.dropped == 0
    writer.close()


def test_submit_is_thread_safe(address):
    path = address
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


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_unstorable_values_never_stop_the_writer(address):
    """A 10**20 token count or a lone surrogate once ended the writer thread for good."""
    path = address
    writer = RequestLogWriter(path, commit_interval_ms=10)
    writer.start()
    huge = {**record(0), "prompt_tokens": 10**20}
    surrogate = {**record(1), "error": "teacher said \ud83d", "response_json": '{"x": "\ud83d"}'}
    writer.submit("requests", huge)
    writer.submit("requests", surrogate)
    assert writer.flush(timeout=5)
    for i in range(2, 12):
        writer.submit("requests", record(i))
    assert writer.flush(timeout=5)
    assert writer.alive and writer.healthy
    assert count(path) == 12 and writer.stats().coerced_rows == 2 and writer.dropped == 0
    db = open_database(path, migrate_schema=False)
    tokens, error = db.execute(
        "select prompt_tokens, error from requests where id in ('req_0', 'req_1') order by id"
    ).fetchall()
    db.conn.close()
    assert tokens[0] is None and error[1] == "teacher said ?"
    writer.close()


def test_a_poison_row_is_isolated_and_counted_and_the_rest_written(address):
    """A wrongly typed value (an object) once stalled the whole log, batch after batch."""
    path = address
    writer = RequestLogWriter(path, commit_interval_ms=10)
    writer.start()
    for i in range(3):
        writer.submit("requests", record(i))
    writer.submit("requests", {**record(3), "total_tokens": {"a": 1}})  # coerced to NULL
    writer.submit("requests", {**record(4), "no_such_column": 1})  # cannot be written at all
    for i in range(5, 8):
        writer.submit("requests", record(i))
    assert writer.flush(timeout=5)
    stats = writer.stats()
    assert count(path) == 7 and stats.poison_rows == 1 and stats.dropped == 1
    assert stats.coerced_rows == 1 and stats.healthy
    writer.close()
    assert writer.written == 7 and writer.dropped == 1


def test_a_crashed_writer_starts_again_and_logging_goes_on(address, monkeypatch):
    path = address
    writer = RequestLogWriter(path, commit_interval_ms=10)
    real = writer._drain_into_retry
    raised = []

    def flaky() -> bool:
        if not raised and writer._queue.qsize() > 0:
            raised.append(1)
            raise RuntimeError("a bug in the writer")
        return real()

    monkeypatch.setattr(writer, "_drain_into_retry", flaky)
    writer.start()
    for i in range(5):
        writer.submit("requests", record(i))
    assert writer.flush(timeout=5)
    assert count(path) == 5 and writer.stats().restarts >= 1 and writer.alive
    writer.close()


def test_a_dead_writer_thread_is_started_again(address):
    path = address
    writer = RequestLogWriter(path, commit_interval_ms=10)
    writer.start()
    writer._closing = True  # the thread ends as if stopped ...
    writer._wake.set()
    assert wait_for(lambda: not writer.alive)
    writer._closing = False  # ... without anyone having asked
    writer.submit("requests", record(0))
    assert writer.alive and writer.flush(timeout=5) and count(path) == 1
    assert writer.restarts == 1
    writer.close()


def test_close_counts_rows_it_could_not_write(address):
    path = address
    writer = RequestLogWriter(path, commit_interval_ms=10, busy_timeout_ms=20)
    writer.start()
    locker = Locker(path)
    for i in range(4):
        writer.submit("requests", record(i))
    writer.close(timeout=0.3)
    locker.release()
    assert writer.written == 0 and writer.dropped == 4


def test_an_unhealthy_log_is_not_writable(address):
    """/ready reads ``check_writable``: a heartbeat that fits is not enough when rows do not."""
    writer = RequestLogWriter(address, commit_interval_ms=10)
    writer.start()
    assert writer.check_writable() is None
    writer.healthy, writer.last_error = False, "OperationalError: database or disk is full"
    assert "disk is full" in (writer.check_writable() or "")
    writer.close()


def test_a_deleted_database_is_noticed_and_reopened(tmp_path):
    path = tmp_path / "u.db"
    writer = RequestLogWriter(path, commit_interval_ms=10)
    writer.start()
    writer.submit("requests", record(0))
    assert writer.flush(timeout=5) and count(path) == 1
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"u.db{suffix}").unlink(missing_ok=True)
    for i in range(1, 4):
        writer.submit("requests", record(i))
    assert writer.flush(timeout=5)
    assert count(path) == 3  # in the new file, not the unlinked one
    stats = writer.stats()
    assert stats.reopened == 1 and "deleted" in (stats.notice or "")
    writer.close()


def test_a_lost_postgresql_connection_keeps_rows_and_reconnects(postgres_url):
    """The server ended the writer's connection (a restart, a failover, an idle timeout): the
    rows are kept, counted as a failed commit, and written once a new connection is open."""
    import psycopg

    writer = RequestLogWriter(postgres_url, commit_interval_ms=10)
    writer.start()
    writer.submit("requests", record(0))
    assert writer.flush(timeout=5) and count(postgres_url) == 1
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        ended = admin.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert ended >= 1
    for i in range(1, 6):
        writer.submit("requests", record(i))
    assert writer.flush(timeout=10)
    assert count(postgres_url) == 6 and writer.dropped == 0
    assert writer.failed_commits >= 1 and writer.healthy
    writer.close()


def test_the_writers_lag_is_measured_while_rows_wait_and_after_they_land(address):
    writer = RequestLogWriter(address, commit_interval_ms=10, busy_timeout_ms=50)
    writer.start()
    assert writer.submit("requests", record(0)) and writer.flush(timeout=5)
    stats = writer.stats()
    assert stats.unwritten_age_s == 0 and 0 < stats.max_commit_lag_s < 1
    locker = Locker(address)
    try:
        submitted = time.monotonic()
        assert writer.submit("requests", record(1))
        assert wait_for(lambda: not writer.healthy)
        time.sleep(0.3)
        waited = time.monotonic() - submitted
        age = writer.stats().unwritten_age_s  # what a crash now would lose
        assert 0.3 <= age <= waited + 0.01
    finally:
        locker.release()
    assert writer.flush(timeout=5) and count(address) == 2
    stats = writer.stats()
    assert stats.unwritten_age_s == 0 and stats.max_commit_lag_s >= age
    writer.close()
