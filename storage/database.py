"""Opening the database (a SQLite file in WAL mode with sane pragmas, or a PostgreSQL URL),
migrations applied; and ``Store``, the one way the rest of the product reaches it."""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

from understudy.storage import engine_postgres
from understudy.storage.engine import Address, Database, describe, error_types, is_postgres
from understudy.storage.migrations import migrate


def open_database(
    path: Address,
    *,
    busy_timeout_ms: int = 2000,
    migrate_schema: bool = True,
    check_same_thread: bool = True,
) -> Database:
    """Open the database at ``path`` and bring its schema up to date: a SQLite file (created if
    needed, WAL mode; ``":memory:"`` a private in-memory one) or a ``postgresql://`` URL (a
    connection of its own). ``db.conn.close()`` closes it."""
    if is_postgres(path):
        pg = engine_postgres.connect(str(path), lock_timeout_ms=busy_timeout_ms)
        if migrate_schema:
            migrate(pg)
        return pg
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
    _portable_functions(conn)
    db = sqlite_utils().Database(conn)
    if migrate_schema:
        migrate(db)
    return db


@cache
def sqlite_utils() -> ModuleType:
    """The ``sqlite_utils`` module, imported without pandas.

    sqlite-utils imports pandas whenever it is installed (the train extra installs it), only to
    store ``pandas.Timestamp`` values, which the product never writes. Importing the gateway
    measured 132 MB resident with it and 61 MB without, and half a CPU-second more. Where
    pandas is already imported, sqlite-utils uses it as usual."""
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        return importlib.import_module("sqlite_utils")
    sys.modules["pandas"] = None  # type: ignore[assignment]  # an import of it fails now
    try:
        return importlib.import_module("sqlite_utils")
    finally:
        if "pandas" in sys.modules and sys.modules["pandas"] is None:
            del sys.modules["pandas"]


def _portable_functions(conn: sqlite3.Connection) -> None:
    """``floor`` where this SQLite was built without its math functions (PostgreSQL has it)."""
    try:
        conn.execute("select floor(1.5)")
    except sqlite3.OperationalError:
        conn.create_function(
            "floor", 1, lambda x: None if x is None else math.floor(x), deterministic=True
        )


def write_heartbeat(db: Database) -> None:
    """Write the heartbeat row: proof that the database takes writes."""
    with db.conn:
        db.execute(
            "insert into heartbeat (id, at) values (1, ?)"
            " on conflict (id) do update set at = excluded.at",
            [time.time()],
        )


PROBE_BYTES = 64 * 1024
"""Size of the file :func:`data_dir_problem` writes: a disk that cannot take it is full."""


def data_dir_problem(data_dir: str | Path, db: Address) -> str | None:
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
    problems: tuple[type[BaseException], ...] = (OSError, *error_types())
    try:
        database = open_database(db)
        try:
            write_heartbeat(database)
        finally:
            database.conn.close()
    except problems as exc:
        reason = " ".join(str(exc).split())  # one line (a server's message may have several)
        return f"cannot write the database {describe(db)}: {reason}"
    return None


class Store:
    """The database (a SQLite file or a PostgreSQL URL) and how long a statement waits for a
    lock.

    ``read()`` and ``write()`` give the calling thread a connection for one block: a new one
    for a SQLite file, one from the process's pool for PostgreSQL. A connection never crosses
    threads, so a ``Store`` may be shared freely and used from worker threads. A ``read()``
    connection refuses writes; storage functions given a ``write()`` connection run their own
    transactions, and one still open when the block ends commits (or rolls back if the block
    raised). Neither applies migrations; ``migrate()`` does.
    """

    def __init__(self, path: Address, *, busy_timeout_ms: int = 2000) -> None:
        self.path: Address = path if is_postgres(path) else Path(path)
        self.busy_timeout_ms = int(busy_timeout_ms)

    def __repr__(self) -> str:
        return f"Store({describe(self.path)!r}, busy_timeout_ms={self.busy_timeout_ms})"

    @property
    def postgres(self) -> bool:
        return is_postgres(self.path)

    def exists(self) -> bool:
        """Whether the database is there: the SQLite file (reading a missing one would create
        it), or a PostgreSQL database with the schema in it."""
        if not self.postgres:
            return Path(self.path).exists()
        with engine_postgres.pooled(str(self.path), read_only=True) as db:
            return "_migrations" in db.table_names()

    @contextmanager
    def read(self) -> Iterator[Database]:
        """A connection that only reads, closed (or given back) when the block ends."""
        if self.postgres:
            with engine_postgres.pooled(
                str(self.path), read_only=True, lock_timeout_ms=self.busy_timeout_ms
            ) as pg:
                yield pg
            return
        db = self._open(migrate_schema=False)
        try:
            db.conn.execute("PRAGMA query_only = ON")
            yield db
        finally:
            db.conn.close()

    @contextmanager
    def write(self) -> Iterator[Database]:
        """A connection for writing, closed (or given back) when the block ends."""
        if self.postgres:
            with (
                engine_postgres.pooled(str(self.path), lock_timeout_ms=self.busy_timeout_ms) as pg,
                pg.conn,
            ):
                yield pg
            return
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

    def _open(self, *, migrate_schema: bool) -> Database:
        return open_database(
            self.path, busy_timeout_ms=self.busy_timeout_ms, migrate_schema=migrate_schema
        )
