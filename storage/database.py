"""Opening the SQLite database: WAL mode, sane pragmas, migrations applied; and ``Store``, the
one way the rest of the product reaches it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from understudy.storage.migrations import migrate


def open_database(
    path: str | Path,
    *,
    busy_timeout_ms: int = 2000,
    migrate_schema: bool = True,
    check_same_thread: bool = True,
) -> sqlite_utils.Database:
    """Open (creating if needed) the database at ``path`` in WAL mode and bring its schema up
    to date. ``":memory:"`` opens a private in-memory database."""
    if str(path) == ":memory:":
        conn = sqlite3.connect(":memory:", check_same_thread=check_same_thread)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), check_same_thread=check_same_thread, timeout=busy_timeout_ms / 1000
        )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    if migrate_schema:
        migrate(db)
    return db


PROBE_BYTES = 64 * 1024
"""Size of the file :func:`data_dir_problem` writes: a disk that cannot take it is full."""


def data_dir_problem(data_dir: str | Path, db: str | Path) -> str | None:
    """Why the gateway could not log into ``data_dir`` (one line naming the path), or None.

    Creates the directory, writes and removes a small file, opens and migrates the database and
    writes its heartbeat: a read-only, full or unreachable data directory is told at start-up."""
    data_dir = Path(data_dir)
    probe = data_dir / ".understudy-write-check"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as fh:
            fh.write(b"\0" * PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        return f"cannot write to the data directory {data_dir}: {exc.strerror or exc}"
    try:
        database = open_database(db)
        try:
            with database.conn:
                database.conn.execute(
                    "insert or replace into heartbeat (id, at) values (1, ?)", [time.time()]
                )
        finally:
            database.conn.close()
    except (OSError, sqlite3.Error) as exc:
        return f"cannot write the database {db}: {exc}"
    return None


class Store:
    """The database file and how long a statement waits for a lock.

    ``read()`` and ``write()`` open a connection for the calling thread and close it when the
    block ends: a connection never crosses threads, so a ``Store`` may be shared freely and used
    from worker threads. A ``read()`` connection refuses writes (``query_only``); storage
    functions given a ``write()`` connection run their own transactions, and one still open when
    the block ends commits (or rolls back if the block raised). Neither applies migrations;
    ``migrate()`` does.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 2000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = int(busy_timeout_ms)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, busy_timeout_ms={self.busy_timeout_ms})"

    def exists(self) -> bool:
        """Whether the database file is there (reading a missing one would create it)."""
        return self.path.exists()

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A connection that only reads, closed when the block ends."""
        db = self._open(migrate_schema=False)
        try:
            db.conn.execute("PRAGMA query_only = ON")
            yield db
        finally:
            db.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A connection for writing, closed when the block ends."""
        db = self._open(migrate_schema=False)
        try:
            with db.conn:
                yield db
        finally:
            db.conn.close()

    def migrate(self) -> list[str]:
        """Create the database if needed and apply pending migrations; their names."""
        db = self._open(migrate_schema=False)
        try:
            return migrate(db)
        finally:
            db.conn.close()

    def _open(self, *, migrate_schema: bool) -> sqlite_utils.Database:
        return open_database(
            self.path, busy_timeout_ms=self.busy_timeout_ms, migrate_schema=migrate_schema
        )
