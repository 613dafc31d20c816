"""Responses API state in the log: a response's row by its id, and deleting it."""

from __future__ import annotations

from typing import Any

from understudy.storage.bodies import BODY_SELECT, decode_row
from understudy.storage.engine import Database

_COLUMNS = (
    f"id, created_at, endpoint, task, served_by, status, {BODY_SELECT}, "
    "api_key_id, response_id, stored, deleted_at"
)


def find_response(db: Database, response_id: str) -> dict[str, Any] | None:
    """The newest client row (not a shadow call's) that answered with ``response_id``."""
    rows = list(
        db.query(
            f"select {_COLUMNS} from requests where response_id = ? and served_by != 'shadow' "
            "and status = 'ok' order by created_at desc limit 1",
            [response_id],
        )
    )
    return decode_row(db, rows[0]) if rows else None


def find_responses(db: Database, response_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``find_response`` for several ids at once (those logged)."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(response_ids), 500):
        batch = response_ids[start : start + 500]
        marks = ", ".join("?" for _ in batch)
        for row in db.query(
            f"select {_COLUMNS} from requests where response_id in ({marks}) "
            "and served_by != 'shadow' and status = 'ok' order by created_at",
            batch,
        ):
            found[row["response_id"]] = decode_row(db, row)
    return found


def mark_response_deleted(db: Database, response_id: str, at: float) -> int:
    """Mark every row of ``response_id`` deleted; the number of rows marked."""
    cursor = db.execute(
        "update requests set deleted_at = ? where response_id = ? and deleted_at is null",
        [at, response_id],
    )
    db.conn.commit()
    return cursor.rowcount
