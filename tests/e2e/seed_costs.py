"""A week of realistic history in a real database: teacher, student, deferred and shadow rows
(costed by the gateway's own :class:`CostBook`), shadow comparisons, a model registry with
promotions and a rollback target, and distill runs of every outcome."""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.config import CostConfig
from understudy.storage.database import open_database
from understudy.storage.distill_queries import insert_run
from understudy.storage.records import RequestRecord
from understudy.storage.registry import promote, register_model, set_mode
from understudy.storage.request_log import write_rows

TEACHER_MODEL = "gpt-4o-2024-08-06"  # priced as gpt-4o: $2.50 / $10.00 per 1M tokens
ROUTED = "support-intent"
SHADOWED = "ticket-summary"
TEACHER_ONLY = "auto-you-are-a-translator-1f2e3d"

GATES = [
    {"name": "agreement", "value": 0.981, "threshold": 0.95, "passed": True, "detail": ""},
    {"name": "coverage", "value": 0.71, "threshold": 0.5, "passed": True, "detail": ""},
    {"name": "non_inferiority", "value": -0.004, "threshold": -0.01, "passed": True, "detail": ""},
    {"name": "validity", "value": 1.0, "threshold": 0.99, "passed": True, "detail": ""},
    {"name": "golden", "value": 1.0, "threshold": 1.0, "passed": True, "detail": "12/12"},
]


@dataclass
class Seeded:
    saved_usd: float
    requests: int
    student: int
    agreement: float


def seed(
    db_path: Path | str, *, days: int = 7, per_hour: int = 12, now: float | None = None
) -> Seeded:
    now = time.time() if now is None else now
    rng = random.Random(7)
    db = open_database(db_path)
    book = CostBook(CostConfig())
    book.teacher_models = {ROUTED: TEACHER_MODEL}
    rows: list[dict] = []
    attempts: list[dict] = []
    # Rows fill the window from 10 minutes after its start to 5 minutes before now, so a
    # report run a little later over the same window sees every one of them.
    start = now - days * 86400 + 600
    hours = days * 24
    hour = (days * 86400 - 900) / hours
    for h in range(hours):
        share = 0.15 + 0.6 * h / hours  # coverage grows as the student improves
        for _ in range(per_hour):
            at = start + (h + rng.random()) * hour
            rows.append(_routed(book, rng, at, share, attempts, rows))
            rows.append(_teacher(book, rng, at + 1, SHADOWED, 900, 120, attempts, shadow=True))
            if rng.random() < 0.5:
                rows.append(_teacher(book, rng, at + 2, TEACHER_ONLY, 300, 200, None))
    write_rows(db, "requests", rows)
    write_rows(db, "student_attempts", attempts)
    _registry(db, now)
    served = [r for r in rows if r["served_by"] == "student"]
    shadow = [a for a in attempts if a["kind"] == "shadow"]
    clients = [r for r in rows if r["served_by"] != "shadow"]
    db.conn.close()
    return Seeded(
        saved_usd=sum(r["saved_usd"] for r in rows),
        requests=len(clients),
        student=len(served),
        agreement=sum(a["agreed"] for a in shadow) / len(shadow),
    )


def _record(task: str, at: float, served_by: str, **kw: object) -> RequestRecord:
    return RequestRecord(
        id="req_" + uuid.uuid4().hex[:20],
        created_at=at,
        endpoint="chat.completions",
        task=task,
        task_source="header",
        requested_model="gpt-4o",
        served_by=served_by,
        status="ok",
        request_json='{"model": "gpt-4o", "messages": []}',
        response_json='{"choices": []}',
        http_status=200,
        api_key_id="key_" + ("a1b2c3d4e5" if at % 3 < 2 else "f6e5d4c3b2"),
        **kw,  # type: ignore[arg-type]
    )


def _routed(
    book: CostBook, rng: random.Random, at: float, share: float, attempts: list, extra: list
) -> dict:
    if rng.random() < share:
        rec = _record(
            ROUTED,
            at,
            "student",
            prompt_tokens=610,
            completion_tokens=6,
            latency_ms=rng.uniform(15, 60),
            confidence=rng.uniform(0.95, 1.0),
            student_version=f"{ROUTED}@v3",
            route_reason="student: confident",
        )
        book.fill(rec)
        if rng.random() < 0.05:  # a sampled shadow call: its teacher bill counts against savings
            shadow = _record(
                ROUTED,
                at + 0.5,
                "shadow",
                teacher_model=TEACHER_MODEL,
                prompt_tokens=640,
                completion_tokens=6,
                latency_ms=rng.uniform(400, 1400),
                route_reason=f"shadow of {rec.id}",
            )
            book.fill(shadow)
            extra.append(shadow.as_row())
            attempts.append(_attempt(ROUTED, rec.id, at, "shadow", rng.random() < 0.985))
        return rec.as_row()
    rec = _record(
        ROUTED,
        at,
        "teacher",
        teacher_model=TEACHER_MODEL,
        prompt_tokens=52,
        completion_tokens=6,
        latency_ms=rng.uniform(400, 1400),
        route_reason="deferred: below_threshold",
        student_version=f"{ROUTED}@v3",
    )
    book.fill(rec)
    attempts.append(_attempt(ROUTED, rec.id, at, "failure", None))
    return rec.as_row()


def _teacher(
    book: CostBook,
    rng: random.Random,
    at: float,
    task: str,
    prompt: int,
    completion: int,
    attempts: list | None,
    shadow: bool = False,
) -> dict:
    rec = _record(
        task,
        at,
        "teacher",
        teacher_model=TEACHER_MODEL,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=rng.uniform(600, 2500),
        route_reason="shadow mode: the teacher serves" if shadow else None,
    )
    book.fill(rec)
    if shadow and attempts is not None:
        attempts.append(_attempt(task, rec.id, at, "shadow", rng.random() < 0.9))
    return rec.as_row()


def _attempt(task: str, request_id: str, at: float, kind: str, agreed: bool | None) -> dict:
    return {
        "request_id": request_id,
        "created_at": at,
        "task": task,
        "student_version": f"{task}@v1",
        "kind": kind,
        "text": "card_arrival",
        "confidence": 0.9,
        "decision": "confident" if kind == "shadow" else "below_threshold",
        "agreed": None if agreed is None else int(agreed),
        "latency_ms": 20.0,
        "prompt_tokens": 40,
        "completion_tokens": 5,
    }


def _registry(db, now: float) -> None:  # type: ignore[no-untyped-def]
    router = {
        "kind": "label",
        "quality_target": 0.97,
        "threshold": {"threshold": 0.912, "expected_coverage": 0.71},
    }
    for version in (1, 2, 3):
        run_id = f"run-{ROUTED}-{version}"
        started = now - (8 - 2 * version) * 86400
        insert_run(db, _run(run_id, ROUTED, started, "succeeded", True, GATES))
        model = register_model(
            db, ROUTED, base="tiny", model_path="/nowhere", router=router, run_id=run_id
        )
        promote(db, model.id, reason=f"distill run {run_id}: all gates passed")
    rejected = [dict(g) for g in GATES]
    rejected[1] = {**rejected[1], "value": 0.31, "passed": False}
    insert_run(
        db,
        _run(
            "run-rejected",
            ROUTED,
            now - 3 * 3600,
            "succeeded",
            False,
            rejected,
            reason="coverage 0.310 < 0.500",
        ),
    )
    insert_run(
        db,
        _run(
            "run-failed",
            SHADOWED,
            now - 5 * 3600,
            "failed",
            False,
            [],
            reason="TrainingFailed: out of memory",
        ),
    )
    insert_run(db, _run("run-shadow", SHADOWED, now - 30 * 3600, "succeeded", True, GATES))
    model = register_model(
        db, SHADOWED, base="tiny", model_path="/nowhere", router=router, run_id="run-shadow"
    )
    promote(db, model.id, reason="distill run run-shadow: all gates passed")
    set_mode(db, SHADOWED, "shadow", reason="operator")


def _run(run_id, task, started, status, promoted, gates, reason=None):  # type: ignore[no-untyped-def]
    return {
        "id": run_id,
        "task": task,
        "started_at": started,
        "finished_at": started + 1260,
        "status": status,
        "trigger": "schedule",
        "reason": reason or ("all gates passed" if promoted else None),
        "gates_json": gates,
        "metrics_json": {"agreement": 0.981, "coverage": 0.71} if gates else {},
        "promoted": int(promoted),
    }


if __name__ == "__main__":  # python -m tests.e2e.seed_costs DATA_DIR: a demo database
    import sys

    out = Path(sys.argv[1]) / "understudy.db"
    print(json.dumps(seed(out).__dict__))
