"""Checks a command makes before it reads or writes: the database is there, the task is known.

A command that fails one raises :class:`CommandRefused`; the ``understudy`` entry point prints
its one line and exits :data:`ARGUMENT_ERROR`, having written nothing.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from understudy.storage.config import db_path
from understudy.storage.database import Store
from understudy.storage.engine import Address, describe
from understudy.storage.queries import known_tasks

if TYPE_CHECKING:
    import sqlite_utils

ARGUMENT_ERROR = 2


class CommandRefused(Exception):
    """What the command was asked cannot be done; the message is one line for the user."""


def existing_store(data_dir: str | Path, database: Address | None = None) -> Store:
    """The database (``database``: ``storage.url``'s; by default the data directory's file),
    refused when it does not exist (opening would create it)."""
    default = db_path(Path(data_dir))
    store = Store(default if database is None else database)
    if not store.exists():
        where = data_dir if store.path == default else describe(store.path)
        raise CommandRefused(
            f"no database in {where} (start `understudy serve` there first, or pass --data-dir)"
        )
    return store


def require_known_task(db: sqlite_utils.Database, task: str) -> None:
    """Refuse a task name the database has never seen, naming the closest known ones."""
    known = known_tasks(db)
    if task in known:
        return
    close = difflib.get_close_matches(task, known, n=3)
    if close:
        hint = "did you mean " + ", ".join(repr(name) for name in close) + "?"
    elif known:
        hint = "known tasks: " + ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    else:
        hint = "no task has been seen yet"
    raise CommandRefused(f"unknown task {task!r}: {hint} (see `understudy tasks`)")
