"""The write-behind log: rows leave the request path through a bounded queue and are written
by one thread in group commits.

* ``submit`` never blocks: when the queue is full the row is dropped and counted.
* The writer starts a group commit every ``commit_interval_ms`` (at once when the last one
  took longer), so a crash loses the rows of the last interval and of the write in flight. How
  long that is on this machine is measured: ``unwritten_age_s`` (the oldest row not yet written)
  and ``max_commit_lag_s`` (the longest a row waited, submit to commit).
* A failing write (locked file, disk full, read-only file) keeps the rows and retries on the
  next tick; serving is never affected. ``healthy`` and ``last_error`` tell the state.
* A row can never stop the log: when a batch fails for a reason other than the file (a value
  SQLite cannot store, a lone surrogate, a wrong type), its rows are written one at a time; a
  row that fails is written again with its unstorable values coerced (see :func:`clean_row`),
  and one that still fails is dropped and counted (``poison_rows``). An unexpected error in the
  writer restarts it (``restarts``), and a writer thread found dead is started again.
* The database file deleted or replaced while running is noticed before the next write: the
  writer opens (and migrates) the file at the path again and counts it (``reopened``).
* ``close`` flushes everything before returning; rows it could not write are counted dropped.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from understudy.storage import rollups
from understudy.storage.bodies import BodyEncoder
from understudy.storage.database import open_database, write_heartbeat
from understudy.storage.engine import Address, error_types, is_postgres, is_unavailable
from understudy.storage.names import NameCoder

log = logging.getLogger("understudy.storage")

_STOP = object()

_INT_RANGE = (-(2**63), 2**63 - 1)


def _is_file_problem(exc: BaseException) -> bool:
    return is_unavailable(exc)


def clean_value(value: Any) -> tuple[Any, bool]:
    """``value`` as SQLite can store it, and whether it had to change: integers beyond 64 bits
    and values of other types (dicts, lists, objects) become NULL, text with lone surrogates
    (or NUL characters, which PostgreSQL refuses) has them replaced."""
    if value is None or isinstance(value, float | bytes):
        return value, False
    if isinstance(value, bool):
        return int(value), False
    if isinstance(value, int):
        ok = _INT_RANGE[0] <= value <= _INT_RANGE[1]
        return (value, False) if ok else (None, True)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
            return value.replace("\x00", "\ufffd"), True
        if "\x00" in value:  # PostgreSQL's text cannot hold NUL
            return value.replace("\x00", "\ufffd"), True
        return value, False
    return None, True


def clean_row(row: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``row`` with every value storable (:func:`clean_value`) and how many were changed."""
    cleaned: dict[str, Any] = {}
    changed = 0
    for key, value in row.items():
        cleaned[key], was_changed = clean_value(value)
        changed += was_changed
    return cleaned, changed


@dataclass
class LogStats:
    depth: int
    written: int
    dropped: int
    failed_commits: int
    healthy: bool
    last_error: str | None
    poison_rows: int = 0
    coerced_rows: int = 0
    restarts: int = 0
    reopened: int = 0
    notice: str | None = None
    """The last thing an operator should know that is not an error (a database reopened)."""
    unwritten_age_s: float = 0.0
    """Age of the oldest row submitted and not yet written: what a crash now would lose."""
    max_commit_lag_s: float = 0.0
    """The longest a row has waited from its submit to its commit since the writer started."""


class RequestLogWriter:
    """Owns one SQLite connection on its own thread; every other thread only enqueues."""

    def __init__(
        self,
        path: Address,
        *,
        queue_size: int = 20000,
        commit_interval_ms: float = 50.0,
        batch_size: int = 1000,
        busy_timeout_ms: int = 2000,
    ) -> None:
        self.path: Address = path if is_postgres(path) else Path(path)
        self.queue_size = queue_size
        self.interval = commit_interval_ms / 1000
        self.batch_size = batch_size
        self.busy_timeout_ms = busy_timeout_ms
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._retry: deque[tuple[str, dict[str, Any], float]] = deque()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._submitted = 0
        self._settled = 0
        self.written = 0
        self.dropped = 0
        self.failed_commits = 0
        self.poison_rows = 0
        self.coerced_rows = 0
        self.restarts = 0
        self.reopened = 0
        self.notice: str | None = None
        self.max_commit_lag = 0.0
        self.healthy = True
        self.last_error: str | None = None
        self._closing = False
        self._abandoned = False
        self._file_id: tuple[int, int] | None = None
        self._last_warning = 0.0
        self._close_deadline = float("inf")
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._bodies = BodyEncoder()
        self._names = NameCoder()

    # -- producer side (any thread, never blocks) ---------------------------------------

    def start(self) -> None:
        open_database(self.path, busy_timeout_ms=self.busy_timeout_ms).close()
        self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="understudy-log", daemon=True)
        self._thread.start()

    def _ensure_running(self) -> None:
        """Start the writer again if its thread is gone without being asked to stop."""
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._closing:
            self.restarts += 1
            log.error("request log writer thread was found stopped; starting it again")
            self._start_thread()

    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``listener(table, row)`` for every row submitted (on the submitting thread)."""
        self._listeners.append(listener)

    def submit(self, table: str, row: dict[str, Any]) -> bool:
        """Queue one row for ``table``; False (and counted as dropped) when the queue is full."""
        for listener in self._listeners:
            listener(table, row)
        try:
            self._queue.put_nowait((table, row, time.monotonic()))
        except queue.Full:
            self._count_drop(1, "log queue full")
            return False
        with self._idle:
            self._submitted += 1
        self._ensure_running()
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row submitted so far is written or dropped."""
        deadline = time.monotonic() + timeout
        with self._idle:
            target = self._submitted
            while self._settled < target:
                self._wake.set()
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued (retrying failed writes until ``timeout``), then stop."""
        if self._thread is None:
            return
        self._closing = True
        self._close_deadline = time.monotonic() + timeout
        self._queue.put(_STOP)
        self._wake.set()
        self._thread.join(timeout + 1.0)
        self._abandoned = self._thread.is_alive()  # stuck in a write: counted here, not there
        self._thread = None
        with self._idle:
            unwritten = self._submitted - self._settled
        if unwritten > 0:  # the writer could not finish: say so, do not pretend
            self._count_drop(unwritten, "log writer stopped with unwritten rows")
            self._settle(unwritten)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> LogStats:
        self._ensure_running()
        return LogStats(
            depth=self._queue.qsize() + len(self._retry),
            written=self.written,
            dropped=self.dropped,
            failed_commits=self.failed_commits,
            healthy=self.healthy,
            last_error=self.last_error,
            poison_rows=self.poison_rows,
            coerced_rows=self.coerced_rows,
            restarts=self.restarts,
            reopened=self.reopened,
            notice=self.notice,
            unwritten_age_s=self._unwritten_age(),
            max_commit_lag_s=self.max_commit_lag,
        )

    def _unwritten_age(self) -> float:
        """Seconds since the oldest row not yet written was submitted (0 when none is)."""
        try:
            oldest = self._retry[0][2]
        except IndexError:  # nothing pending: the oldest is at the head of the queue, if any
            with self._queue.mutex:
                head = next((item for item in self._queue.queue if item is not _STOP), None)
            if head is None:
                return 0.0
            oldest = head[2]
        return max(0.0, time.monotonic() - oldest)

    def check_writable(self, timeout_s: float = 1.0) -> str | None:
        """Try a real write on a separate connection; None if it worked, else the reason."""
        try:
            db = open_database(
                self.path, busy_timeout_ms=int(timeout_s * 1000), migrate_schema=False
            )
            try:
                write_heartbeat(db)
            finally:
                db.conn.close()
        except error_types() as exc:
            return f"database not writable: {exc}"
        if not self.healthy:  # a tiny heartbeat may fit where the log's rows do not
            return f"request log cannot write: {self.last_error}"
        return None

    # -- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        """Serve until stopped; an unexpected error restarts the loop, never ends logging."""
        while True:
            try:
                self._serve()
                break
            except Exception as exc:  # noqa: BLE001 - the log must outlive any bug
                if self._closing and time.monotonic() > self._close_deadline:
                    break
                self.restarts += 1
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("request log writer failed (%s); starting again", self.last_error)
                time.sleep(min(self.interval, 0.05) if self.restarts < 10 else 1.0)
        if self._retry and not self._abandoned:
            self._count_drop(len(self._retry), "log writer stopped with unwritten rows")
            self._settle(len(self._retry))
            self._retry.clear()

    def _serve(self) -> None:
        db = self._open()
        next_commit = time.monotonic()
        try:
            while True:
                if not self._closing:  # the interval runs from the last commit's start
                    self._wake.wait(max(0.0, next_commit - time.monotonic()))
                    self._wake.clear()
                next_commit = time.monotonic() + self.interval
                stopping = self._drain_into_retry() or self._closing
                if self._retry and self._file_replaced():
                    db.conn.close()
                    db = self._reopen()
                if self._retry and getattr(db.conn, "closed", False):
                    db = self._reconnect(db)
                while self._retry and self._write_batch(db):
                    self._drain_into_retry()
                self._train_dictionary(db)
                if stopping and (not self._retry or time.monotonic() > self._close_deadline):
                    return
        finally:
            db.conn.close()

    def _open(self) -> Any:
        db = open_database(self.path, busy_timeout_ms=self.busy_timeout_ms)
        self._file_id = self._current_file_id()
        return db

    def _reopen(self) -> Any:
        """The file at the path is not the one open: open (create, migrate) it again."""
        db = self._open()
        self._bodies = BodyEncoder()  # the dictionary in use is in the old file
        self._names = NameCoder()  # and so are the names coded so far
        self.reopened += 1
        self.notice = (
            f"the database file {self.path} was deleted or replaced while the gateway ran; "
            f"reopened at {time.strftime('%Y-%m-%d %H:%M:%S')} (rows logged before are in the "
            "old file)"
        )
        log.warning("request log: %s", self.notice)
        return db

    def _train_dictionary(self, db: Any) -> None:
        """Train the bodies' dictionary when it is due; a failure leaves bodies compressed
        without it (or with the one before) and is tried again later."""
        try:
            self._bodies.maybe_train(db)
        except Exception as exc:  # noqa: BLE001 - a dictionary must never stop the log
            log.warning("body dictionary not stored (%s: %s)", type(exc).__name__, exc)

    def _reconnect(self, db: Any) -> Any:
        """The server closed the connection (PostgreSQL restarted, network lost): open a new
        one; while that fails the rows stay pending, counted as failed commits."""
        try:
            fresh = self._open()
        except Exception as exc:  # noqa: BLE001 - unreachable now: retried next tick
            self._failed(exc)
            return db
        db.conn.close()
        log.warning("request log: reconnected to the database")
        return fresh

    def _current_file_id(self) -> tuple[int, int] | None:
        if is_postgres(self.path):
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _file_replaced(self) -> bool:
        return self._file_id is not None and self._current_file_id() != self._file_id

    def _drain_into_retry(self) -> bool:
        """Move queued rows into the pending buffer; True when the stop marker was seen."""
        stop = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return stop
            if item is _STOP:
                stop = True
                continue
            self._retry.append(item)
            overflow = len(self._retry) - self.queue_size
            if overflow > 0:
                for _ in range(overflow):
                    self._retry.popleft()
                self._count_drop(overflow, "log backlog over queue_size while writes fail")
                self._settle(overflow)

    def _write_batch(self, db: Any) -> bool:
        """Write the first rows pending; False (rows kept) when the file refused them."""
        batch = [self._retry[i] for i in range(min(self.batch_size, len(self._retry)))]
        try:
            _insert(db, [(table, row) for table, row, _ in batch], self._bodies, self._names)
        except Exception as exc:  # noqa: BLE001 - a row must not stop the log
            if _is_file_problem(exc):
                return self._failed(exc)
            return self._write_one_by_one(db, len(batch))
        for _ in batch:
            self._retry.popleft()
        self._committed(batch[0][2])
        self._written(len(batch))
        return True

    def _write_one_by_one(self, db: Any, n: int) -> bool:
        """A batch failed because of a row: write its rows alone, isolating the bad ones."""
        for _ in range(n):
            table, row, submitted = self._retry[0]
            try:
                _insert(db, [(table, row)], self._bodies, self._names)
            except Exception as exc:  # noqa: BLE001
                if _is_file_problem(exc):
                    return self._failed(exc)
                if not self._write_cleaned(db, table, row, exc):
                    return False
            else:
                self._retry.popleft()
                self._committed(submitted)
                self._written(1)
        return True

    def _write_cleaned(self, db: Any, table: str, row: dict[str, Any], first: Exception) -> bool:
        """Write ``row`` with its values coerced; a row that still fails is dropped, counted.
        False when the file refused the write (the row is kept)."""
        cleaned, changed = clean_row(row)
        try:
            if not changed:
                raise first
            _insert(db, [(table, cleaned)], self._bodies, self._names)
        except Exception as exc:  # noqa: BLE001
            if _is_file_problem(exc):
                self._failed(exc)
                return False
            self._retry.popleft()
            self.poison_rows += 1
            self._count_drop(
                1, f"a row for {table} could not be written ({type(exc).__name__}: {exc})"
            )
            self._settle(1)
            return True
        self._committed(self._retry.popleft()[2])
        self.coerced_rows += 1
        self._warn(f"request log row for {table}: {changed} unstorable values written as NULL")
        self._written(1)
        return True

    def _failed(self, exc: BaseException) -> bool:
        self.failed_commits += 1
        self.healthy = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._warn(
            f"request log write failed ({self.last_error}); {len(self._retry)} rows kept for retry"
        )
        time.sleep(min(self.interval, 0.05))
        return False

    def _committed(self, submitted: float) -> None:
        """Rows submitted at ``submitted`` (monotonic) and after are committed now."""
        self.max_commit_lag = max(self.max_commit_lag, time.monotonic() - submitted)

    def _written(self, n: int) -> None:
        self.written += n
        if not self.healthy:
            log.warning("request log writes resumed")
        self.healthy = True
        self.last_error = None
        self._settle(n)

    def _settle(self, n: int) -> None:
        with self._idle:
            self._settled += n
            self._idle.notify_all()

    def _count_drop(self, n: int, why: str) -> None:
        self.dropped += n
        self._warn(f"dropped {n} request log rows: {why} (total dropped {self.dropped})")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 5.0:
            self._last_warning = now
            log.warning(message)


def write_rows(db: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` of ``table`` as the log writer does (added to the hourly rollups), in one
    transaction, on the caller's connection: for imports, seeding and tests."""
    _insert(db, [(table, row) for row in rows])


def _insert(
    db: Any,
    rows: list[tuple[str, dict[str, Any]]],
    bodies: BodyEncoder | None = None,
    names: NameCoder | None = None,
) -> None:
    """Insert ``rows`` (table, row) and add them to the hourly rollups, in one transaction;
    ``requests`` rows with their bodies compressed (``bodies``) and their names coded
    (``names``) when given."""
    by_table: dict[str, list[dict[str, Any]]] = {}
    for table, row in rows:
        by_table.setdefault(table, []).append(row)
    try:
        with db.conn:
            unseen = rollups.unseen_ids(db.conn, by_table.get("requests"))
            for table, logged in by_table.items():
                _insert_rows(db, table, _encoded(db, table, logged, bodies, names))
            rollups.record(db.conn, by_table, unseen)
    except BaseException:
        if names is not None:  # names it added were rolled back with the rows
            names.forget()
        raise


def _encoded(
    db: Any,
    table: str,
    rows: list[dict[str, Any]],
    bodies: BodyEncoder | None,
    names: NameCoder | None,
) -> list[dict[str, Any]]:
    if table != "requests":
        return rows
    if bodies is not None:
        rows = [bodies.encode(db, row) for row in rows]
    if names is not None:
        rows = [names.encode(db, row) for row in rows]
    return rows


def _insert_rows(db: Any, table: str, rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0].keys())
    sql = (
        f'insert into "{table}" ({", ".join(cols)}) '
        f"values ({', '.join('?' for _ in cols)}) on conflict do nothing"
    )
    db.conn.executemany(sql, [[r.get(c) for c in cols] for r in rows])
