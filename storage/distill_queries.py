"""Queries and writes of the distiller: log rows to learn from, runs, locks, golden examples.

Thin over sqlite-utils; the policy (what to keep, when a lock is stale) lives in ``distiller/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from understudy.storage.bodies import BODY_SELECT, HAS_RESPONSE, decode_row
from understudy.storage.engine import Database, exclusive

# -- the log -------------------------------------------------------------------------------


def iter_log_rows(db: Database, task: str, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows that may carry a teacher answer (teacher-served and shadow, any status) plus
    student-served rows, oldest first, bodies as text; with ``limit`` only the most recent
    ``limit`` rows.

    Streamed: the oldest row within ``limit`` is found from the ``(task, created_at,
    served_by)`` index alone, then rows are read in index order one at a time, so memory does
    not grow with the log (no sort, no rows held)."""
    sql = (
        f"select id, created_at, endpoint, served_by, status, route_reason, teacher_model,"
        f" {BODY_SELECT}"
        f" from requests where task = ? and served_by in {_LEARNED_FROM}"
    )
    params: list[Any] = [task]
    if limit is not None:
        start = _nth_newest(db, task, limit)
        if start is None:
            return
        sql += " and created_at >= ?"
        params.append(start)
    for row in db.query(sql + " order by created_at", params):
        yield decode_row(db, row)


_LEARNED_FROM = "('teacher', 'shadow', 'student')"


def _nth_newest(db: Database, task: str, n: int) -> float | None:
    """``created_at`` of the ``n``-th newest row :func:`iter_log_rows` reads (the oldest when
    there are fewer); None when there are none or ``n`` is 0."""
    if n <= 0:
        return None
    row = db.execute(
        "select min(created_at) from (select created_at from requests"
        f" where task = ? and served_by in {_LEARNED_FROM}"
        " order by created_at desc limit ?) as newest",
        [task, n],
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def failure_request_ids(db: Database, task: str) -> set[str]:
    """Requests the student deferred, or answered differently from the teacher (read through
    the ``(task, created_at)`` index; a ``distinct`` here made SQLite walk every attempt)."""
    rows = db.query(
        "select request_id from student_attempts"
        " where task = ? and (kind = 'failure' or agreed = 0)",
        [task],
    )
    return {r["request_id"] for r in rows}


def latest_feedback(db: Database, task: str) -> dict[str, dict[str, Any]]:
    """The most recent feedback row per request of ``task``."""
    rows = db.query(
        "select f.request_id, f.score, f.correction, f.created_at, f.reviewed from feedback f"
        " join requests r on r.id = f.request_id where r.task = ? order by f.id",
        [task],
    )
    return {r["request_id"]: r for r in rows}


def count_teacher_answers(db: Database, task: str, *, since: float | None = None) -> int:
    """Complete teacher answers (served or shadow) of ``task``, optionally after ``since``."""
    sql = (
        "select count(*) from requests where task = ? and served_by in ('teacher', 'shadow')"
        f" and status = 'ok' and {HAS_RESPONSE}"
    )
    params: list[Any] = [task]
    if since is not None:
        sql += " and created_at > ?"
        params.append(since)
    return int(db.execute(sql, params).fetchone()[0])


def first_request_at(db: Database, task: str) -> float | None:
    """When ``task`` was first logged (None: never)."""
    row = db.execute("select min(created_at) from requests where task = ?", [task]).fetchone()
    return None if row[0] is None else float(row[0])


def tasks_with_teacher_answers(db: Database) -> list[str]:
    rows = db.query(
        "select distinct task from requests where served_by in ('teacher', 'shadow')"
        " and status = 'ok' order by task"
    )
    return [r["task"] for r in rows]


def next_model_version(db: Database, task: str) -> int:
    row = db.execute("select max(version) from models where task = ?", [task]).fetchone()
    return int(row[0] or 0) + 1


# -- runs ----------------------------------------------------------------------------------

_JSON_COLUMNS = ("dataset_json", "gates_json", "metrics_json")


def insert_run(db: Database, run: dict[str, Any]) -> None:
    row = _encode(run)
    with db.conn:
        db.execute(
            f"insert into distill_runs ({', '.join(row)}) values ({', '.join('?' * len(row))})",
            list(row.values()),
        )


def update_run(db: Database, run_id: str, **fields: Any) -> None:
    row = _encode(fields)
    with db.conn:
        db.execute(
            f"update distill_runs set {', '.join(f'{col} = ?' for col in row)} where id = ?",
            [*row.values(), run_id],
        )


def get_run(db: Database, run_id: str) -> dict[str, Any] | None:
    rows = list(db.query("select * from distill_runs where id = ?", [run_id]))
    return _decode(rows[0]) if rows else None


def list_runs(db: Database, task: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
    """Runs, most recent first."""
    where, params = ("where task = ?", [task]) if task else ("", [])
    rows = db.query(
        f"select * from distill_runs {where} order by started_at desc limit ?", [*params, limit]
    )
    return [_decode(r) for r in rows]


SERVING_EVENT = "serving"
"""The event a gateway writes once a newly loaded champion answers its task's requests."""


def serving_since(db: Database, task: str, model_id: str) -> float | None:
    """When a gateway first began serving ``model_id`` for ``task`` (None: not yet)."""
    rows = db.execute(
        "select created_at, detail_json from events where task = ? and kind = ?"
        " order by created_at",
        [task, SERVING_EVENT],
    ).fetchall()
    for created_at, detail in rows:
        if json.loads(detail or "{}").get("model") == model_id:
            return float(created_at)
    return None


def last_run(
    db: Database, task: str, *, statuses: tuple[str, ...] | None = None
) -> dict[str, Any] | None:
    sql, params = "select * from distill_runs where task = ?", [task]
    if statuses:
        sql += f" and status in ({', '.join('?' * len(statuses))})"
        params += list(statuses)
    rows = list(db.query(sql + " order by started_at desc limit 1", params))
    return _decode(rows[0]) if rows else None


def running_runs(db: Database) -> list[dict[str, Any]]:
    return [_decode(r) for r in db.query("select * from distill_runs where status = 'running'")]


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    for key in _JSON_COLUMNS:
        if key in out and not isinstance(out[key], (str, type(None))):
            out[key] = json.dumps(out[key])
    return out


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in _JSON_COLUMNS:
        value = out.pop(key, None)
        out[key.removesuffix("_json")] = json.loads(value) if value else None
    out["promoted"] = bool(out.get("promoted"))
    return out


# -- locks ---------------------------------------------------------------------------------


def acquire_lock(
    db: Database,
    task: str,
    *,
    owner: str,
    host: str,
    pid: int,
    ttl_s: float,
    run_id: str | None = None,
    is_stale: Callable[[dict[str, Any]], bool],
) -> tuple[bool, dict[str, Any] | None]:
    """Take the lock of ``task`` unless a live holder has it. Returns (taken, the lock row that
    was there before: the live holder when not taken, the stale one replaced when taken)."""
    now = time.time()
    with exclusive(db, f"distill_lock:{task}"):
        rows = list(db.query("select * from distill_locks where task = ?", [task]))
        held = rows[0] if rows else None
        if held is not None and not is_stale(held):
            return False, held
        db.execute(
            "insert into distill_locks (task, owner, run_id, host, pid, acquired_at,"
            " heartbeat_at, expires_at) values (?, ?, ?, ?, ?, ?, ?, ?)"
            " on conflict (task) do update set owner = excluded.owner,"
            " run_id = excluded.run_id, host = excluded.host, pid = excluded.pid,"
            " acquired_at = excluded.acquired_at, heartbeat_at = excluded.heartbeat_at,"
            " expires_at = excluded.expires_at",
            [task, owner, run_id, host, pid, now, now, now + ttl_s],
        )
    return True, held


def renew_lock(db: Database, task: str, owner: str, ttl_s: float) -> bool:
    """Push the lock's expiry forward; False when ``owner`` no longer holds it."""
    now = time.time()
    with db.conn:
        cur = db.execute(
            "update distill_locks set heartbeat_at = ?, expires_at = ?"
            " where task = ? and owner = ?",
            [now, now + ttl_s, task, owner],
        )
    return cur.rowcount == 1


def set_lock_run(db: Database, task: str, owner: str, run_id: str) -> None:
    with db.conn:
        db.execute(
            "update distill_locks set run_id = ? where task = ? and owner = ?",
            [run_id, task, owner],
        )


def release_lock(db: Database, task: str, owner: str) -> None:
    with db.conn:
        db.execute("delete from distill_locks where task = ? and owner = ?", [task, owner])


def get_lock(db: Database, task: str) -> dict[str, Any] | None:
    rows = list(db.query("select * from distill_locks where task = ?", [task]))
    return rows[0] if rows else None


# -- golden examples -----------------------------------------------------------------------


def add_golden(
    db: Database,
    task: str,
    *,
    input_value: str | list[dict[str, Any]],
    expected: str,
    note: str | None = None,
) -> int:
    """Store a must-pass example: a user message (or a list of chat messages) and its answer."""
    with db.conn:
        row = db.execute(
            "insert into golden_examples (task, created_at, input_json, expected, note)"
            " values (?, ?, ?, ?, ?) returning id",
            [task, time.time(), json.dumps(input_value), expected, note],
        ).fetchone()
    return int(row[0])


def list_golden(db: Database, task: str | None = None) -> list[dict[str, Any]]:
    where, params = ("where task = ?", [task]) if task else ("", [])
    rows = db.query(f"select * from golden_examples {where} order by task, id", params)
    return [{**r, "input": json.loads(r.pop("input_json"))} for r in rows]


def remove_golden(db: Database, golden_id: int) -> bool:
    with db.conn:
        cur = db.execute("delete from golden_examples where id = ?", [golden_id])
    return cur.rowcount == 1


def set_model_paths(
    db: Database,
    model_id: str,
    *,
    model_path: str | None,
    adapter_path: str | None,
) -> None:
    """Where a registered version's weights are (after they moved)."""
    with db.conn:
        db.execute(
            "update models set model_path = ?, adapter_path = ? where id = ?",
            [model_path, adapter_path, model_id],
        )
