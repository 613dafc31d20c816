"""Read queries other packages need. Thin over sqlite-utils; no business logic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from understudy.storage import names
from understudy.storage.bodies import BODY_SELECT, HAS_RESPONSE, decode_row
from understudy.storage.engine import Database
from understudy.storage.reports import task_list


def list_tasks(db: Database) -> list[dict[str, Any]]:
    """Every task with its request counts, most recent activity first (from the rollups)."""
    return task_list(db)


def get_request(db: Database, request_id: str) -> dict[str, Any] | None:
    rows = list(db.query("select * from requests where id = ?", [request_id]))
    return decode_row(db, rows[0]) if rows else None


def request_owner(db: Database, request_id: str) -> tuple[bool, str | None]:
    """``(logged, the gateway key id it was made with)`` of one request."""
    row = db.execute("select api_key_id from requests where id = ?", [request_id]).fetchone()
    return (False, None) if row is None else (True, row[0])


def most_requested_model(db: Database) -> str | None:
    """The model name clients asked the teacher for most often."""
    row = db.execute(
        "select requested_model from requests where served_by = 'teacher' "
        "and requested_model is not null group by requested_model "
        "order by count(*) desc limit 1"
    ).fetchone()
    return names.decode_value(db, row[0]) if row else None


def iter_teacher_pairs(
    db: Database, task: str, *, since: float | None = None
) -> Iterator[dict[str, Any]]:
    """Complete teacher answers of ``task`` in time order, bodies parsed; streamed from the
    ``(task, created_at)`` index, one row at a time."""
    sql = (
        f"select id, created_at, endpoint, {BODY_SELECT} from requests "
        f"where task = ? and served_by = 'teacher' and status = 'ok' and {HAS_RESPONSE}"
    )
    params: list[Any] = [task]
    if since is not None:
        sql += " and created_at >= ?"
        params.append(since)
    for row in db.query(sql + " order by created_at", params):
        row = decode_row(db, row)
        yield {
            "id": row["id"],
            "created_at": row["created_at"],
            "endpoint": row["endpoint"],
            "request": json.loads(row["request_json"]),
            "response": json.loads(row["response_json"]),
        }


def auto_tasks(db: Database, limit: int) -> list[str]:
    """Up to ``limit`` task names made from a prompt fingerprint (``auto-...``), read from the
    task index."""
    return [task for task in logged_tasks(db) if task.startswith("auto-")][:limit]


_NEXT_TASK = (
    "with recursive names(task) as ("
    " select min(task) from requests"
    " union all"
    " select (select min(task) from requests where task > names.task)"
    " from names where names.task is not null"
    ") select task from names where task is not null"
)


def logged_tasks(db: Database) -> list[str]:
    """Every task name in the request log, in the index's order: one index seek per name (a
    skip scan). ``select distinct task`` read every row's index entry, millions on a big log,
    for a few hundred names."""
    return [row[0] for row in db.execute(_NEXT_TASK).fetchall()]


def known_tasks(db: Database) -> list[str]:
    """Every task name the database has seen: in the request log, the registry, distillation
    runs or golden examples; sorted."""
    logged = [
        task
        for task in logged_tasks(db)
        if db.execute(
            "select 1 from requests where task = ? and served_by != 'passthrough' limit 1", [task]
        ).fetchone()
    ]
    rows = db.query(
        """
        select task from task_state
        union select task from models
        union select task from distill_runs
        union select task from golden_examples
        """
    )
    return sorted({*logged, *(r["task"] for r in rows)})
