"""What the gateway's monthly budgets read: usage per gateway key, from the rollups (exact
across every process writing the log, at any log size)."""

from __future__ import annotations

from understudy.storage.engine import Database
from understudy.storage.reports import window
from understudy.storage.rollups import HOUR_S, ids_absent

_END_OF_TIME = float(2**31 * HOUR_S)
"""Beyond any hour logged (and the largest hour a 32-bit column holds)."""


def usage_since(db: Database, since: float) -> dict[str, tuple[int, float]]:
    """``{api_key_id: (total tokens, teacher USD)}`` of the requests logged since the start of
    the hour holding ``since`` (a month starts on the hour: exact)."""
    src, params = window("rollup_requests", since, _END_OF_TIME)
    rows = db.execute(
        f"select api_key_id, sum(total_tokens), sum(teacher_cost_usd) from {src}"
        " where api_key_id != '' group by api_key_id",
        params,
    ).fetchall()
    return {key: (int(tokens), float(usd)) for key, tokens, usd in rows}


def logged_ids(db: Database, ids: list[str]) -> set[str]:
    """Which of ``ids`` are logged (their usage is in the rollups: both commit together)."""
    return set(ids) - ids_absent(db.conn, ids)
