"""What the gateway's monthly budgets read from the log: usage per gateway key."""

from __future__ import annotations

import sqlite_utils


def usage_since(db: sqlite_utils.Database, since: float) -> dict[str, tuple[int, float]]:
    """``{api_key_id: (total tokens, teacher USD)}`` of the requests logged since ``since``."""
    has_cost = "teacher_cost_usd" in db["requests"].columns_dict
    cost = "sum(coalesce(teacher_cost_usd, 0))" if has_cost else "0"
    rows = db.execute(
        f"select api_key_id, sum(coalesce(total_tokens, 0)), {cost} from requests"
        " where created_at >= ? and api_key_id is not null group by api_key_id",
        [since],
    ).fetchall()
    return {key: (int(tokens), float(usd)) for key, tokens, usd in rows}
