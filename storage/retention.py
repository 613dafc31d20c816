"""Retention: deleting old rows of the traffic log in small batches.

``requests``, ``student_attempts`` and ``feedback`` rows older than a cut-off are deleted, a
few hundred at a time, each batch its own short transaction: the rows to delete are found by a
read (which never blocks the log writer in WAL mode), then removed by primary key. The model
registry, distillation runs and golden examples are never touched.

:class:`RetentionWorker` applies a retention period from a background thread, every
``interval_s``; ``understudy prune`` applies one once.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from understudy.storage.database import open_database
from understudy.storage.engine import (
    Address,
    Database,
    error_types,
    is_postgres,
    outside_transaction,
)

log = logging.getLogger("understudy.retention")

PRUNED_TABLES = ("requests", "student_attempts", "feedback")
DAY_S = 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S, "w": 7 * DAY_S}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_age(text: str) -> float:
    """``"90d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` in seconds; ValueError otherwise."""
    match = _AGE.match(text.lower())
    if match is None:
        raise ValueError(f"not an age: {text!r} (use a number and s, m, h, d or w, e.g. 90d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def count_older(db: Database, cutoff: float) -> dict[str, int]:
    """How many rows of each pruned table were created before ``cutoff``."""
    return {
        table: db.execute(
            f"select count(*) from [{table}] where created_at < ?", [cutoff]
        ).fetchone()[0]
        for table in PRUNED_TABLES
    }


def prune(
    db: Database,
    cutoff: float,
    *,
    batch_size: int = 500,
    pause_s: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """Delete rows created before ``cutoff`` from every pruned table; rows deleted per table.

    A database error (locked, read-only) propagates; what was deleted stays deleted and the
    next run carries on. ``pause_s`` between batches leaves room for other writers.
    """
    deleted = dict.fromkeys(PRUNED_TABLES, 0)
    for table in PRUNED_TABLES:
        while not should_stop():
            ids = [
                r[0]
                for r in db.execute(
                    f"select id from [{table}] where created_at < ? limit ?",
                    [cutoff, batch_size],
                ).fetchall()
            ]
            if not ids:
                break
            with db.conn:
                db.execute(
                    f"delete from [{table}] where id in ({', '.join('?' * len(ids))})",
                    ids,
                )
            deleted[table] += len(ids)
            if len(ids) < batch_size:
                break
            if pause_s:
                time.sleep(pause_s)
    return deleted


def vacuum(db: Database) -> None:
    """Give the space of deleted rows back (SQLite rewrites the file; slow)."""
    outside_transaction(db, "vacuum")


class RetentionWorker:
    """Applies ``max_age_s`` every ``interval_s`` from a daemon thread with its own connection."""

    def __init__(
        self,
        path: Address,
        max_age_s: float,
        interval_s: float = 3600.0,
        *,
        batch_size: int = 500,
        busy_timeout_ms: int = 2000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path: Address = path if is_postgres(path) else Path(path)
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.busy_timeout_ms = busy_timeout_ms
        self.clock = clock
        self.runs = 0
        self.deleted = dict.fromkeys(PRUNED_TABLES, 0)
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="understudy-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> dict[str, int]:
        """One pass: delete everything older than the retention period."""
        db = open_database(self.path, busy_timeout_ms=self.busy_timeout_ms, migrate_schema=False)
        try:
            done = prune(
                db,
                self.clock() - self.max_age_s,
                batch_size=self.batch_size,
                pause_s=0.01,
                should_stop=self._stop.is_set,
            )
        finally:
            db.conn.close()
        self.runs += 1
        for table, n in done.items():
            self.deleted[table] += n
        if any(done.values()):
            log.info("retention: deleted %s", ", ".join(f"{n} {t}" for t, n in done.items()))
        return done

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.last_error = None
            except error_types() as exc:  # locked or read-only: try again next time
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("retention pass failed (%s); retrying later", self.last_error)
            self._stop.wait(self.interval_s)
