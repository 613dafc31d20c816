"""The write-behind log: rows leave the request path through a bounded queue and are written
by one thread in group commits.

* ``submit`` never blocks: when the queue is full the row is dropped and counted.
* The writer commits at least every ``commit_interval_ms``, so a crash loses at most that much.
* A failing write (locked file, disk full, read-only file) keeps the rows and retries on the
  next tick; serving is never affected. ``healthy`` and ``last_error`` tell the state.
* ``close`` flushes everything before returning.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from understudy.storage.database import open_database

log = logging.getLogger("understudy.storage")

_STOP = object()


@dataclass
class LogStats:
    depth: int
    written: int
    dropped: int
    failed_commits: int
    healthy: bool
    last_error: str | None


class RequestLogWriter:
    """Owns one SQLite connection on its own thread; every other thread only enqueues."""

    def __init__(
        self,
        path: str | Path,
        *,
        queue_size: int = 20000,
        commit_interval_ms: float = 50.0,
        batch_size: int = 1000,
        busy_timeout_ms: int = 2000,
    ) -> None:
        self.path = Path(path)
        self.queue_size = queue_size
        self.interval = commit_interval_ms / 1000
        self.batch_size = batch_size
        self.busy_timeout_ms = busy_timeout_ms
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._retry: deque[tuple[str, dict[str, Any]]] = deque()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._submitted = 0
        self._settled = 0
        self.written = 0
        self.dropped = 0
        self.failed_commits = 0
        self.healthy = True
        self.last_error: str | None = None
        self._last_warning = 0.0
        self._close_deadline = float("inf")
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # -- producer side (any thread, never blocks) ---------------------------------------

    def start(self) -> None:
        open_database(self.path, busy_timeout_ms=self.busy_timeout_ms).close()
        self._thread = threading.Thread(target=self._run, name="understudy-log", daemon=True)
        self._thread.start()

    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``listener(table, row)`` for every row submitted (on the submitting thread)."""
        self._listeners.append(listener)

    def submit(self, table: str, row: dict[str, Any]) -> bool:
        """Queue one row for ``table``; False (and counted as dropped) when the queue is full."""
        for listener in self._listeners:
            listener(table, row)
        try:
            self._queue.put_nowait((table, row))
        except queue.Full:
            self._count_drop(1, "log queue full")
            return False
        with self._idle:
            self._submitted += 1
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
        self._close_deadline = time.monotonic() + timeout
        self._queue.put(_STOP)
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> LogStats:
        return LogStats(
            depth=self._queue.qsize() + len(self._retry),
            written=self.written,
            dropped=self.dropped,
            failed_commits=self.failed_commits,
            healthy=self.healthy,
            last_error=self.last_error,
        )

    def check_writable(self, timeout_s: float = 1.0) -> str | None:
        """Try a real write on a separate connection; None if it worked, else the reason."""
        try:
            conn = sqlite3.connect(str(self.path), timeout=timeout_s)
            try:
                with conn:
                    conn.execute(
                        "insert or replace into heartbeat (id, at) values (1, ?)", [time.time()]
                    )
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return f"database not writable: {exc}"
        return None

    # -- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        db = open_database(self.path, busy_timeout_ms=self.busy_timeout_ms, migrate_schema=False)
        stopping = False
        try:
            while True:
                self._wake.wait(self.interval)
                self._wake.clear()
                stopping = self._drain_into_retry() or stopping
                while self._retry:
                    if not self._write_batch(db):
                        break
                    stopping = self._drain_into_retry() or stopping
                if stopping and (not self._retry or time.monotonic() > self._close_deadline):
                    break
                if stopping:
                    time.sleep(min(self.interval, 0.05))
        finally:
            if self._retry:
                self._count_drop(len(self._retry), "log writer stopped with unwritten rows")
                self._settle(len(self._retry))
                self._retry.clear()
            db.conn.close()

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
        batch = [self._retry[i] for i in range(min(self.batch_size, len(self._retry)))]
        by_table: dict[str, list[dict[str, Any]]] = {}
        for table, row in batch:
            by_table.setdefault(table, []).append(row)
        try:
            with db.conn:
                for table, rows in by_table.items():
                    cols = list(rows[0].keys())
                    sql = (
                        f"insert or ignore into [{table}] ({', '.join(cols)}) "
                        f"values ({', '.join('?' for _ in cols)})"
                    )
                    db.conn.executemany(sql, [[r.get(c) for c in cols] for r in rows])
        except sqlite3.Error as exc:
            self.failed_commits += 1
            self.healthy = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._warn(
                f"request log write failed ({self.last_error}); "
                f"{len(self._retry)} rows kept for retry"
            )
            time.sleep(min(self.interval, 0.05))
            return False
        for _ in batch:
            self._retry.popleft()
        self.written += len(batch)
        if not self.healthy:
            log.warning("request log writes resumed")
        self.healthy = True
        self.last_error = None
        self._settle(len(batch))
        return True

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
