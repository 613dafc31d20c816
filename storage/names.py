"""Repeated names in the log kept short: a ``requests`` row written by the log keeps its
endpoint family, task source, requested model and teacher model (:data:`CODED`) as a code
naming a row of ``log_names``, a few bytes instead of up to dozens on every row.

A code is :data:`MARK` (the ASCII unit separator, which no name the gateway logs starts with)
followed by the name's id in decimal: ``"\\x1f3"`` is ``log_names`` row 3. Codes are text, so
the columns keep their type on both engines, and a value that is not a code is the name itself:
rows written by :func:`storage.request_log.write_rows` (imports, seeding) and rows logged
before migration ``0020_short_names`` read as they are (the migration converts the latter).
Readers never see a code: :func:`decode_row` puts the names back (``storage.bodies.decode_row``
calls it). Names are never deleted, so retention deletes rows and nothing else.

The columns readers filter on in SQL (``task``, ``served_by``, ``status``) stay names.
"""

from __future__ import annotations

import weakref
from typing import Any

from understudy.storage.engine import Database

CODED = ("endpoint", "task_source", "requested_model", "teacher_model")
"""The ``requests`` columns the log writes as codes."""
MARK = "\x1f"
"""What a code starts with."""
CONVERT_BATCH = 500
"""Rows migration ``0020_short_names`` converts per statement."""

DDL = """
create table if not exists log_names (
    id integer primary key,
    name text not null unique
);
"""

_known: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
"""Names read so far, per open database (ids are the database's own), code -> name."""


def is_code(value: Any) -> bool:
    return isinstance(value, str) and value[:1] == MARK and value[1:].isdigit()


class NameCoder:
    """Codes names for the rows one writer logs (its own cache of the codes given).

    A name seen for the first time is added to ``log_names`` in the caller's transaction:
    when that transaction fails, :meth:`forget` must be called (the code may not exist)."""

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}

    def encode(self, db: Database, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` (for ``requests``) with the :data:`CODED` names it has as codes."""
        out = dict(row)
        for column in CODED:
            value = out.get(column)
            if isinstance(value, str):
                out[column] = self.code(db, value)
        return out

    def code(self, db: Database, name: str) -> str:
        found = self._codes.get(name)
        if found is None:
            conn = db.conn  # in the caller's transaction, on either engine
            conn.execute(
                "insert into log_names (name) values (?) on conflict (name) do nothing", [name]
            )
            found_id = conn.execute("select id from log_names where name = ?", [name]).fetchone()
            found = self._codes[name] = f"{MARK}{int(found_id[0])}"
        return found

    def forget(self) -> None:
        """Drop the codes given so far (their transaction may have been rolled back)."""
        self._codes.clear()


def decode_value(db: Any, value: Any) -> Any:
    """The name ``value`` codes for, or ``value`` itself when it is not a code."""
    if not is_code(value):
        return value
    cache = _cache(db)
    name = cache.get(value) if cache is not None else None
    if name is None:
        row = db.execute("select name from log_names where id = ?", [int(value[1:])]).fetchone()
        if row is None:
            raise LookupError(f"log name {value[1:]} is not in the database")
        name = row[0]
        if cache is not None:
            cache[value] = name
    return name


def decode_row(db: Any, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every code among its :data:`CODED` columns replaced by its name."""
    for column in CODED:
        if is_code(row.get(column)):
            row[column] = decode_value(db, row[column])
    return row


def _cache(db: Any) -> dict[str, str] | None:
    try:
        return _known.setdefault(db, {})
    except TypeError:  # a connection that cannot be referred to weakly: read each time
        return None


def convert(db: Database, batch: int = CONVERT_BATCH) -> int:
    """Code the names of every row logged before ``0020_short_names``, ``batch`` rows a
    statement in ``id`` order, within the caller's transaction; the rows converted. Rows
    already coded are left as they are, so it can run again after an interruption."""
    coder = NameCoder()
    columns = ", ".join(CODED)
    sets = ", ".join(f"{c} = ?" for c in CODED)
    after, converted = "", 0
    while True:
        rows = db.execute(
            f"select id, {columns} from requests where id > ? order by id limit ?", [after, batch]
        ).fetchall()
        if not rows:
            return converted
        after = rows[-1][0]
        updates = []
        for request_id, *values in rows:
            if any(isinstance(v, str) and not is_code(v) for v in values):
                coded = [
                    v if not isinstance(v, str) or is_code(v) else coder.code(db, v) for v in values
                ]
                updates.append([*coded, request_id])
        if updates:
            db.conn.executemany(f"update requests set {sets} where id = ?", updates)
        converted += len(updates)
