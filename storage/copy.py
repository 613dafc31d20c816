"""Copying a whole database into another (``understudy migrate-db``): every table, row for
row, at the same schema version, in one transaction on the target.

The target must hold no rows (a new database, or one a gateway only created the schema of):
it is migrated to the current schema first, then every table the source has is copied in
batches, columns matched by name. Identity columns continue after the highest id copied.
Nothing is half-written: a failure rolls the copy back, and the command can be run again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from understudy.storage.engine import Database, dialect
from understudy.storage.migrations import MIGRATIONS, applied, migrate

SKIPPED = ("_migrations", "heartbeat")
"""Tables the target keeps its own of: the migrations it applied (the same names) and the
heartbeat its writers write."""


class CopyRefused(Exception):
    """The copy cannot start (target not empty, source from another schema version)."""


def _columns(db: Database, table: str) -> list[str]:
    if dialect(db) == "postgresql":
        rows = db.execute(
            "select column_name from information_schema.columns"
            " where table_schema = current_schema() and table_name = ? order by ordinal_position",
            [table],
        ).fetchall()
        return [r[0] for r in rows]
    return [r[1] for r in db.execute(f"pragma table_info([{table}])").fetchall()]


def _has_rows(db: Database, table: str) -> bool:
    return db.execute(f'select 1 from "{table}" limit 1').fetchone() is not None


def _clean(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:  # PostgreSQL's text cannot hold NUL
        return value.replace("\x00", "\ufffd")
    return value


def copy_database(
    source: Database,
    target: Database,
    *,
    batch_size: int = 1000,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Copy every table of ``source`` (brought up to date first) into the new ``target``;
    rows copied per table."""
    if any(_has_rows(target, t) for t in target.table_names() if t not in SKIPPED):
        raise CopyRefused("the target database is not empty: it holds rows already")
    migrate(source)
    if applied(source) != [name for name, _ in MIGRATIONS]:
        raise CopyRefused("the source database was migrated by a newer version of understudy")
    migrate(target)
    tables = [t for t in source.table_names() if t not in SKIPPED and not t.startswith("sqlite_")]
    copied: dict[str, int] = {}
    with target.conn:
        for table in tables:
            copied[table] = _copy_table(source, target, table, batch_size, progress)
            if dialect(target) == "postgresql":
                _continue_identity(target, table)
    return copied


def _copy_table(
    source: Database,
    target: Database,
    table: str,
    batch_size: int,
    progress: Callable[[str, int], None] | None,
) -> int:
    wanted = set(_columns(target, table))
    cols = [c for c in _columns(source, table) if c in wanted]
    if not cols:
        return 0
    insert = f'insert into "{table}" ({", ".join(cols)}) values ({", ".join("?" for _ in cols)})'
    cursor = source.execute(f'select {", ".join(cols)} from "{table}"')
    done = 0
    while True:
        rows = cursor.fetchmany(batch_size)
        if not rows:
            return done
        target.conn.executemany(insert, [[_clean(v) for v in row] for row in rows])
        done += len(rows)
        if progress is not None:
            progress(table, done)


def _continue_identity(db: Database, table: str) -> None:
    """An identity column's next value after the highest id copied."""
    if "id" not in _columns(db, table):
        return
    row = db.execute("select pg_get_serial_sequence(?, 'id')", [table]).fetchone()
    if row is None or row[0] is None:
        return
    db.execute(
        f'select setval(?, coalesce((select max(id) from "{table}"), 0) + 1, false)', [row[0]]
    )
