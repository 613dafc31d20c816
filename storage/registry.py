"""The model registry and per-task serving state.

A model version is immutable once registered (``task@vN``, never reused). Each task has a mode
(``teacher-only``, ``shadow``, ``routed``), a champion (the version that serves) and the previous
champion (for rollback). Promotion and rollback switch the champion in one transaction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from understudy.storage.engine import Database
from understudy.storage.notify import notify_change

MODES = ("teacher-only", "shadow", "routed")
DRIFT_REASON = "drift"
RUN_OUTCOMES = ("promoted", "rejected", "skipped", "failed", "running")
"""What a distillation run came to, in words that cannot be misread (a run whose gates were
judged is stored as ``succeeded``; whether it was promoted is a column of its own)."""


def run_outcome(status: str, promoted: bool | int | None) -> str:
    """A run's outcome from its stored ``status`` and ``promoted``: ``promoted``, ``rejected``
    (judged, a gate failed), ``skipped`` (too little data), ``failed`` or ``running``."""
    if promoted:
        return "promoted"
    return "rejected" if status == "succeeded" else status


@dataclass(frozen=True)
class ModelVersion:
    id: str
    task: str
    version: int
    base: str
    adapter_path: str | None
    model_path: str | None
    status: str
    created_at: float
    metrics: dict[str, Any] = field(default_factory=dict)
    router: dict[str, Any] = field(default_factory=dict)
    data_window: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    promoted_at: float | None = None

    @property
    def weights(self) -> str:
        """What to load: the full model path, or the base (with ``adapter_path`` on top)."""
        return self.model_path or self.base


@dataclass(frozen=True)
class TaskState:
    task: str
    mode: str
    champion_id: str | None
    previous_id: str | None
    updated_at: float
    reason: str | None


class RegistryError(Exception):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


def register_model(
    db: Database,
    task: str,
    *,
    base: str,
    adapter_path: str | None = None,
    model_path: str | None = None,
    metrics: dict[str, Any] | None = None,
    router: dict[str, Any] | None = None,
    data_window: dict[str, Any] | None = None,
    run_id: str | None = None,
    status: str = "candidate",
) -> ModelVersion:
    """Record a new immutable version ``task@vN`` (N = previous highest + 1)."""
    with db.conn:
        row = db.execute("select max(version) from models where task = ?", [task]).fetchone()
        version = (row[0] or 0) + 1
        model_id = f"{task}@v{version}"
        db.execute(
            "insert into models (id, task, version, created_at, base, adapter_path, model_path,"
            " status, metrics_json, router_json, data_window_json, run_id)"
            " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                model_id,
                task,
                version,
                time.time(),
                base,
                adapter_path,
                model_path,
                status,
                json.dumps(metrics or {}),
                json.dumps(router or {}),
                json.dumps(data_window or {}),
                run_id,
            ],
        )
    return get_model(db, model_id)


def get_model(db: Database, model_id: str) -> ModelVersion:
    rows = list(db.query("select * from models where id = ?", [model_id]))
    if not rows:
        raise RegistryError(f"unknown model version {model_id!r}")
    return _model(rows[0])


def list_models(db: Database, task: str) -> list[ModelVersion]:
    return [
        _model(r) for r in db.query("select * from models where task = ? order by version", [task])
    ]


def update_model_router(db: Database, model_id: str, router: dict[str, Any]) -> None:
    with db.conn:
        db.execute("update models set router_json = ? where id = ?", [json.dumps(router), model_id])


def task_state(db: Database, task: str) -> TaskState:
    rows = list(db.query("select * from task_state where task = ?", [task]))
    if not rows:
        return TaskState(task, "routed", None, None, 0.0, None)
    r = rows[0]
    return TaskState(
        r["task"], r["mode"], r["champion_id"], r["previous_id"], r["updated_at"], r["reason"]
    )


def all_task_states(db: Database) -> list[TaskState]:
    return [task_state(db, r["task"]) for r in db.query("select task from task_state")]


def champion(db: Database, task: str) -> ModelVersion | None:
    state = task_state(db, task)
    return get_model(db, state.champion_id) if state.champion_id else None


def promote(db: Database, model_id: str, reason: str = "promoted") -> TaskState:
    """Make ``model_id`` the champion of its task; ``previous`` becomes the newest earlier
    former champion (the old one, as a rule): what a rollback would serve."""
    model = get_model(db, model_id)
    now = time.time()
    with db.conn:
        old = task_state(db, model.task)
        previous = _earlier_champion(db, model.task, model.version)  # what a rollback picks
        # A task that drift sent back to the teacher serves again once a new student is promoted.
        mode = (
            "routed"
            if old.mode == "teacher-only" and (old.reason or "").startswith(DRIFT_REASON)
            else old.mode
        )
        _upsert_state(db, model.task, mode, model_id, previous, now, reason)
        db.execute(
            "update models set status = 'champion', promoted_at = ? where id = ?", [now, model_id]
        )
        if old.champion_id and old.champion_id != model_id:
            db.execute("update models set status = 'retired' where id = ?", [old.champion_id])
        _event(
            db,
            model.task,
            "promoted",
            {"model": model_id, "previous": old.champion_id, "reason": reason},
        )
    return task_state(db, model.task)


def rollback(
    db: Database, task: str, reason: str = "rollback", *, to: str | None = None
) -> TaskState:
    """Serve an earlier champion again (instant: it is still registered).

    The target is ``to`` (an earlier version of the task that was champion once), else the
    newest earlier version that was champion once and has not been rolled back. The version
    left is marked ``rolled_back`` and is never picked again by a rollback: repeating one goes
    further back (or fails), it never re-promotes what was rolled back. ``previous`` becomes
    the next rollback target (None when there is none).
    """
    with db.conn:
        state = task_state(db, task)
        if not state.champion_id:
            raise RegistryError(f"task {task!r} has no champion to roll back from")
        current = get_model(db, state.champion_id)
        target = _rollback_target(db, task, current.version, to)
        now = time.time()
        previous = _earlier_champion(db, task, target.version)
        _upsert_state(db, task, state.mode, target.id, previous, now, reason)
        db.execute("update models set status = 'champion' where id = ?", [target.id])
        db.execute("update models set status = 'rolled_back' where id = ?", [current.id])
        _event(db, task, "rollback", {"model": target.id, "from": current.id, "reason": reason})
    return task_state(db, task)


def _rollback_target(db: Database, task: str, below: int, to: str | None) -> ModelVersion:
    if to is None:
        found = _earlier_champion(db, task, below)
        if found is None:
            raise RegistryError(f"task {task!r} has no earlier champion to roll back to")
        return get_model(db, found)
    model = get_model(db, to)
    if model.task != task or model.version >= below:
        raise RegistryError(f"{to!r} is not an earlier version of task {task!r}")
    if model.promoted_at is None:
        raise RegistryError(f"{to!r} was never promoted: only a former champion can serve again")
    return model


def _earlier_champion(db: Database, task: str, below: int) -> str | None:
    """The newest version below ``below`` that was champion once and was not rolled back."""
    row = db.execute(
        "select id from models where task = ? and version < ? and promoted_at is not null"
        " and status != 'rolled_back' order by version desc limit 1",
        [task, below],
    ).fetchone()
    return None if row is None else str(row[0])


def set_mode(db: Database, task: str, mode: str, reason: str = "operator") -> TaskState:
    if mode not in MODES:
        raise RegistryError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    with db.conn:
        state = task_state(db, task)
        _upsert_state(db, task, mode, state.champion_id, state.previous_id, time.time(), reason)
        _event(db, task, "mode", {"mode": mode, "from": state.mode, "reason": reason})
    return task_state(db, task)


def log_event(db: Database, task: str | None, kind: str, detail: dict[str, Any]) -> None:
    with db.conn:
        _event(db, task, kind, detail)


def events(db: Database, task: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    where, params = ("where task = ?", [task]) if task else ("", [])
    rows = db.query(f"select * from events {where} order by id desc limit ?", [*params, limit])
    return [{**r, "detail": json.loads(r["detail_json"] or "{}")} for r in rows]


def _event(db: Database, task: str | None, kind: str, detail: dict[str, Any]) -> None:
    db.execute(
        "insert into events (created_at, task, kind, detail_json) values (?, ?, ?, ?)",
        [time.time(), task, kind, json.dumps(detail)],
    )


def _upsert_state(
    db: Database,
    task: str,
    mode: str,
    champion_id: str | None,
    previous_id: str | None,
    now: float,
    reason: str | None,
) -> None:
    db.execute(
        "insert into task_state (task, mode, champion_id, previous_id, updated_at, reason)"
        " values (?, ?, ?, ?, ?, ?) on conflict(task) do update set mode = excluded.mode,"
        " champion_id = excluded.champion_id, previous_id = excluded.previous_id,"
        " updated_at = excluded.updated_at, reason = excluded.reason",
        [task, mode, champion_id, previous_id, now, reason],
    )
    notify_change(db, task)  # gateways on PostgreSQL re-read at once


def _model(r: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        id=r["id"],
        task=r["task"],
        version=r["version"],
        base=r["base"],
        adapter_path=r["adapter_path"],
        model_path=r["model_path"],
        status=r["status"],
        created_at=r["created_at"],
        metrics=json.loads(r["metrics_json"] or "{}"),
        router=json.loads(r["router_json"] or "{}"),
        data_window=json.loads(r["data_window_json"] or "{}"),
        run_id=r["run_id"],
        promoted_at=r["promoted_at"],
    )
