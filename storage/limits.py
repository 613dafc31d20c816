"""What the gateway's monthly budgets read: usage per gateway key, from the hourly rollups
(exact across every process writing the log, at any log size)."""

from __future__ import annotations

import math

from understudy.storage.engine import Database
from understudy.storage.rollups import HOUR_S, ids_absent


def usage_since(db: Database, since: float) -> dict[str, tuple[int, float]]:
    """``{api_key_id: (total tokens, teacher USD)}`` of the requests logged since the start of
    the hour holding ``since`` (a month starts on the hour: exact)."""
    rows = db.execute(
        "select api_key_id, sum(total_tokens), sum(teacher_cost_usd) from rollup_requests"
        " where hour >= ? and api_key_id != '' group by api_key_id",
        [math.floor(since / HOUR_S)],
    ).fetchall()
    return {key: (int(tokens), float(usd)) for key, tokens, usd in rows}


def logged_ids(db: Database, ids: list[str]) -> set[str]:
    """Which of ``ids`` are logged (their usage is in the rollups: both commit together)."""
    return set(ids) - ids_absent(db.conn, ids)
