"""``understudy migrate-db --to postgresql://...``: the data directory's SQLite database copied
into a new PostgreSQL database, every table, at the same schema version."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from understudy.settings import Settings
from understudy.storage.copy import CopyRefused, copy_database
from understudy.storage.database import Store, open_database
from understudy.storage.engine import describe, error_types, is_postgres
from understudy.storage.migrations import MIGRATIONS

ARGUMENT_ERROR = 2
FAILED = 1


def migrate_db(settings: Settings, *, to: str, out: TextIO = sys.stdout) -> int:
    """Copy the settings' SQLite database into the PostgreSQL database ``to``; an exit code."""
    source = settings.db_path
    if not is_postgres(to):
        print(f"understudy migrate-db: --to must be a postgresql:// URL: {to!r}", file=sys.stderr)
        return ARGUMENT_ERROR
    if is_postgres(source):
        print(
            "understudy migrate-db: storage.url already names PostgreSQL; the copy reads the "
            "SQLite database (unset storage.url, or pass --data-dir)",
            file=sys.stderr,
        )
        return ARGUMENT_ERROR
    if not Store(source).exists():
        print(f"understudy migrate-db: no database at {source}", file=sys.stderr)
        return ARGUMENT_ERROR
    try:
        copied = _copy(source, to, out)
    except CopyRefused as exc:
        print(f"understudy migrate-db: {exc}; nothing copied", file=sys.stderr)
        return FAILED
    except error_types() as exc:
        print(f"understudy migrate-db: the copy failed, nothing copied: {exc}", file=sys.stderr)
        return FAILED
    summary = ", ".join(f"{n} {table}" for table, n in copied.items() if n)
    out.write(
        f"copied {summary or 'no rows'} from {source} into {describe(to)}"
        f" (schema {MIGRATIONS[-1][0]})\n"
        f"point every gateway and worker at it: storage.url = {describe(to)!r}"
        " (UNDERSTUDY_STORAGE_URL)\n"
    )
    return 0


def _copy(source: Path | str, to: str, out: TextIO) -> dict[str, int]:
    src = open_database(source, migrate_schema=False)
    try:
        target = open_database(to, migrate_schema=False)
        try:
            return copy_database(src, target, progress=_progress(out))
        finally:
            target.conn.close()
    finally:
        src.conn.close()


def _progress(out: TextIO) -> Callable[[str, int], None]:
    step = 50_000

    def report(table: str, done: int) -> None:
        if done % step == 0:
            out.write(f"  {table}: {done} rows\n")

    return report
