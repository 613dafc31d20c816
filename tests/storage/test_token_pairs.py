"""What the cost book learns from the log (token ratios, teacher answers' mean tokens, latest
teacher models) is read from rollups the log writer keeps, and gives what the scans of 30 days of
``requests`` joined with the attempts gave (kept here verbatim as the oracle)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from tests.storage.test_rollups import copy_of, database_at
from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.config import CostConfig
from understudy.storage import names, reports
from understudy.storage.database import Store, open_database
from understudy.storage.engine import Address
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter, write_rows
from understudy.storage.retention import prune

HOUR = 3600
T0 = 1_764_460_800  # 2025-11-30 00:00 UTC
TASKS = ("classify", "extract", "auto-1f2e")
MODELS = ("gpt-4o", "gpt-4o-mini", None)


# -- the oracle: the scans the cost book's refresh made before the rollups ------------------


def old_token_ratio_sums(db: Any, since: float) -> dict[str, dict[str, Any]]:
    pairs = """
        select a.task as task, a.prompt_tokens as sp, a.completion_tokens as sc,
               r.prompt_tokens as tp, r.completion_tokens as tc
        from student_attempts a join requests r on r.id = a.request_id
        where a.created_at >= :since and r.served_by = 'teacher' and r.status = 'ok'
        union all
        select a.task, a.prompt_tokens, a.completion_tokens, s.prompt_tokens, s.completion_tokens
        from requests s join student_attempts a
             on a.request_id = substr(s.route_reason, 11) and a.kind = 'shadow'
        where s.created_at >= :since and s.served_by = 'shadow' and s.status = 'ok'
              and s.route_reason like 'shadow of %'
    """
    rows = db.query(
        f"select task, count(*) as pairs, sum(tp) as tp, sum(tc) as tc, sum(sp) as sp,"
        f" sum(sc) as sc from ({pairs}) as pairs where tp is not null and sp is not null"
        f" and tc is not null and sc is not null group by task",
        {"since": since},
    )
    return {r["task"]: {k: v if k == "task" else int(v) for k, v in r.items()} for r in rows}


def old_teacher_token_means(db: Any, since: float) -> dict[str, dict[str, Any]]:
    rows = db.query(
        "select task, count(*) as answers, avg(prompt_tokens) as prompt,"
        " avg(completion_tokens) as completion from requests"
        " where created_at >= ? and served_by in ('teacher', 'shadow') and status = 'ok'"
        " and prompt_tokens is not null and completion_tokens is not null group by task",
        [since],
    )
    return {
        r["task"]: {
            "task": r["task"],
            "answers": int(r["answers"]),
            "prompt": float(r["prompt"]),
            "completion": float(r["completion"]),
        }
        for r in rows
    }


def old_latest_teacher_models(db: Any, since: float) -> dict[str, str]:
    answers = "served_by in ('teacher', 'shadow') and teacher_model is not null"
    rows = db.query(
        "select r.task, r.teacher_model from requests r join (select task,"
        f" max(created_at) as at from requests where created_at >= ? and {answers}"
        f" group by task) as latest on r.task = latest.task and r.created_at = latest.at"
        f" where r.{answers}",
        [since],
    )
    return {r["task"]: names.decode_value(db, r["teacher_model"]) for r in rows}  # logged coded


def learned(db: Any, since: float) -> dict[str, Any]:
    return {
        "ratios": reports.token_ratio_sums(db, since),
        "means": reports.teacher_token_means(db, since),
        "models": reports.latest_teacher_models(db, since),
    }


def scanned(db: Any, since: float) -> dict[str, Any]:
    return {
        "ratios": old_token_ratio_sums(db, since),
        "means": old_teacher_token_means(db, since),
        "models": old_latest_teacher_models(db, since),
    }


def same(new: dict[str, Any], old: dict[str, Any]) -> None:
    assert new["ratios"] == old["ratios"]
    assert new["models"] == old["models"]
    assert set(new["means"]) == set(old["means"])
    for task, mean in old["means"].items():
        got = new["means"][task]
        assert (got["task"], got["answers"]) == (mean["task"], mean["answers"])
        for side in ("prompt", "completion"):
            assert got[side] == pytest.approx(mean[side], rel=1e-12)


# -- a log with deferrals, shadow pairs, errors and missing tokens ---------------------------


def _tokens(rng: random.Random, low: int, high: int) -> int | None:
    return None if rng.random() < 0.06 else rng.randint(low, high)


def _row(rng: random.Random, rid: str, at: float, task: str, served_by: str, **kw: Any) -> dict:
    record = RequestRecord(
        id=rid,
        created_at=at,
        endpoint="chat",
        task=task,
        task_source="header",
        requested_model="gpt-4o",
        teacher_model=None if served_by == "student" else rng.choice(MODELS),
        served_by=served_by,
        status=kw.pop("status", "ok"),
        request_json="{}",
        prompt_tokens=_tokens(rng, 20, 900),
        completion_tokens=_tokens(rng, 1, 300),
        **kw,
    )
    return record.as_row()


def _attempt(rng: random.Random, rid: str, at: float, task: str, kind: str) -> dict[str, Any]:
    return {
        "request_id": rid,
        "created_at": at,
        "task": task,
        "student_version": "v1",
        "kind": kind,
        "agreed": rng.choice([0, 1]) if kind == "shadow" else None,
        "prompt_tokens": _tokens(rng, 20, 900),
        "completion_tokens": _tokens(rng, 1, 400),
    }


def workload(n: int = 900, seed: int = 5, start: float = T0 - 30 * HOUR) -> list[tuple]:
    """``(table, row)`` in the order a gateway logs them, over 60 hours from ``start``."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    later: list[tuple[str, dict[str, Any]]] = []  # shadow calls finish after their request
    for i, at in enumerate(sorted(start + rng.random() * 60 * HOUR for _ in range(n))):
        rid, task = f"req_{i}", rng.choice(TASKS)
        kind = rng.choice(["teacher", "deferred", "student", "student", "failed", "mode"])
        if kind == "student":
            out.append(("requests", _row(rng, rid, at, task, "student")))
            if rng.random() < 0.6:  # a sampled shadow call, ok or failed, then the attempt
                status = "ok" if rng.random() < 0.85 else "error"
                shadow = _row(
                    rng, f"shd_{i}", at + 2, task, "shadow", status=status,
                    route_reason=f"shadow of {rid}",
                )  # fmt: skip
                check = [
                    ("requests", shadow),
                    ("student_attempts", _attempt(rng, rid, at + 2.1, task, "shadow")),
                ]
                if rng.random() < 0.2:
                    check.reverse()
                later.extend(check)
            else:
                out.append(("student_attempts", _attempt(rng, rid, at + 0.1, task, "audit")))
        elif kind in ("deferred", "failed", "mode"):  # an attempt and the teacher's row
            status = "error" if kind == "failed" else "ok"
            reason = "shadow mode" if kind == "mode" else "deferred: low confidence"
            pair = [
                ("student_attempts", _attempt(rng, rid, at + 0.1, task, "deferral")),
                ("requests", _row(rng, rid, at, task, "teacher", status=status,
                                  route_reason=reason)),
            ]  # fmt: skip
            rng.shuffle(pair)
            out.extend(pair)
        else:
            out.append(("requests", _row(rng, rid, at, task, "teacher")))
        if later and rng.random() < 0.5:
            out.append(later.pop(0))
    out.extend(later)
    out.append(("requests", _row(rng, "req_0", T0, "classify", "teacher")))  # logged already
    return out


def log_workload(path: Address, rows: list[tuple] | None = None) -> Address:
    """The workload through the real log writer, in small batches (a pair's rows often land
    in different commits)."""
    writer = RequestLogWriter(path, commit_interval_ms=2, batch_size=7)
    writer.start()
    for table, row in rows or workload():
        writer.submit(table, row)
    writer.close()
    assert writer.dropped == 0
    return path


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    return log_workload(tmp_path_factory.mktemp("pairs") / "u.db")


SINCES = [T0 - 40 * HOUR, T0 - 7 * HOUR, T0, T0 + 13 * HOUR, T0 + 31 * HOUR]


@pytest.mark.parametrize("since", SINCES)
def test_the_cost_book_learns_what_the_scans_of_requests_gave(logged, since):
    db = open_database(logged)
    got, want = learned(db, since), scanned(db, since)
    same(got, want)
    if since < T0 + 30 * HOUR:
        assert all(len(want[k]) == len(TASKS) for k in want)
        assert sum(r["pairs"] for r in want["ratios"].values()) > 20
    else:
        assert want == {"ratios": {}, "means": {}, "models": {}} == got


def test_a_window_starting_off_the_hour_counts_its_whole_first_hour(logged):
    db = open_database(logged)
    assert learned(db, T0 + 0.5 * HOUR)["ratios"] == scanned(db, T0)["ratios"]


def test_both_engines_learn_the_same(address):
    log_workload(address)
    with Store(address).read() as db:
        for since in SINCES[:3]:
            same(learned(db, since), scanned(db, since))


def test_the_learning_outlives_the_rows_retention_prunes(logged, tmp_path):
    db = copy_of(logged, tmp_path / "pruned.db")
    since = T0 - 40 * HOUR
    before = scanned(db, since)
    deleted = prune(db, T0)
    assert deleted["requests"] > 0 and scanned(db, since) != before
    same(learned(db, since), before)


def test_the_migration_fills_them_from_an_existing_log(tmp_path):
    """A database at 0017 with a log (rows inserted as they were), migrated: what the scans
    gave."""
    path = tmp_path / "old.db"
    with database_at(path, "0017_task_latency") as db:
        assert "rollup_token_pairs" not in db.table_names()
        rows = workload(600, seed=8)
        for table in ("requests", "student_attempts"):
            with db.conn:
                db[table].insert_all([row for t, row in rows if t == table], ignore=True)
        before = {since: scanned(db, since) for since in SINCES}
    assert "0018_token_pairs" in Store(path).migrate()
    db = open_database(path)
    for since, want in before.items():
        same(learned(db, since), want)
    assert sum(r["pairs"] for r in before[SINCES[0]]["ratios"].values()) > 20


_REQUESTS = re.compile(r"(?<![\w])(requests|student_attempts)\b")


def test_the_refresh_reads_neither_requests_nor_attempts(logged, monkeypatch, sql_statements):
    """EXPLAIN QUERY PLAN of every statement the cost book's refresh runs: none touches the log,
    so its cost does not grow with it."""
    statements = sql_statements
    monkeypatch.setattr("time.time", lambda: T0 + 24 * HOUR)
    book = CostBook(CostConfig())
    book.refresh(logged)
    monkeypatch.undo()
    assert set(book.ratios) == set(TASKS) and all(r.pairs > 0 for r in book.ratios.values())
    assert set(book.teacher_means) == set(TASKS)
    selects = [s for s in statements if s.lstrip().lower().startswith(("select", "with"))]
    assert sum("rollup_" in s for s in selects) == 3
    db = open_database(logged)
    for sql in selects:
        plan = " | ".join(r[3] for r in db.execute(f"explain query plan {sql}").fetchall())
        assert not _REQUESTS.search(plan), f"{sql}\n  -> {plan}"


def test_the_log_writer_finds_a_pairs_other_row_by_an_index(logged, tmp_path):
    """What the writer looks up to pair a row with one logged before (an attempt's teacher
    row, a shadow attempt's call, a teacher row's or a shadow call's attempts) searches an
    index: writing costs the same at any log size."""
    db = copy_of(logged, tmp_path / "more.db")
    rng = random.Random(1)
    at = T0 + 20 * HOUR
    batches = [
        [("requests", _row(rng, "new_1", at, "classify", "teacher"))],
        [("student_attempts", _attempt(rng, "new_1", at, "classify", "deferral"))],
        [("requests", _row(rng, "new_2", at, "classify", "student"))],
        [("requests", _row(rng, "shd_new", at, "classify", "shadow",
                           route_reason="shadow of new_2"))],
        [("student_attempts", _attempt(rng, "new_2", at, "classify", "shadow"))],
    ]  # fmt: skip
    seen: list[str] = []
    db.conn.set_trace_callback(seen.append)
    before = reports.token_ratio_sums(db, T0)["classify"]["pairs"]
    for batch in batches:
        for table, row in batch:
            row.update(prompt_tokens=10, completion_tokens=5)
            write_rows(db, table, [row])
    db.conn.set_trace_callback(None)
    assert reports.token_ratio_sums(db, T0)["classify"]["pairs"] == before + 2
    lookups = [s for s in seen if s.lstrip().lower().startswith("select")]
    assert any("route_reason in" in s for s in lookups)
    for sql in lookups:
        plan = " | ".join(r[3] for r in db.execute(f"explain query plan {sql}").fetchall())
        assert "SCAN" not in plan, f"{sql}\n  -> {plan}"
