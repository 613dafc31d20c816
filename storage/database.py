"""Opening the SQLite database: WAL mode, sane pragmas, migrations applied."""

from __future__ import annotations

import sqlite3
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
