"""Reads that scan the log: export, the distiller's dataset build and retention stream rows
with memory that does not grow with the log, each statement on an index that matches it
(checked with SQLite's EXPLAIN QUERY PLAN on the statements the functions really run)."""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from understudy.cli import main
from understudy.distiller.config import DatasetConfig
from understudy.distiller.dataset import build_dataset
from understudy.storage.bodies import BodyEncoder
from understudy.storage.database import open_database
from understudy.storage.distill_queries import (
    count_teacher_answers,
    failure_request_ids,
    iter_log_rows,
    latest_feedback,
)
from understudy.storage.queries import auto_tasks, iter_teacher_pairs, known_tasks
from understudy.storage.records import RequestRecord
from understudy.storage.responses import find_response
from understudy.storage.retention import count_older, prune

NOW = time.time()
LABELS = ["card_arrival", "top_up_failed", "lost_or_stolen_card", "exchange_rate"]


def fill(db: Any, n: int, *, task: str = "t", start: int = 0, other_tasks: int = 0) -> None:
    """``n`` logged chat rows of ``task`` (bodies compressed as the log writes them), one a
    second up to now, plus ``other_tasks`` rows of another task between them."""
    rng = random.Random(start)
    encoder = BodyEncoder()
    rows = []
    for i in range(start, start + n + other_tasks):
        words = " ".join(
            rng.choice(["card", "cash", "atm", "fee", "pin", "lost"]) for _ in range(12)
        )
        request = {"model": "m", "messages": [{"role": "user", "content": f"{words} {i}"}]}
        answer = {"choices": [{"message": {"role": "assistant", "content": rng.choice(LABELS)}}]}
        record = RequestRecord(
            id=f"req_{i:08d}",
            created_at=NOW - (start + n + other_tasks - i),
            endpoint="chat.completions",
            task=task if i - start < n else "other",
            task_source="header",
            requested_model="m",
            served_by="teacher",
            status="ok",
            request_json=json.dumps(request),
            response_json=json.dumps(answer),
        )
        rows.append(encoder.encode(db, record.as_row()))
    with db.conn:
        db["requests"].insert_all(rows, batch_size=2000)


def statements(db: Any, run: Callable[[], Any]) -> list[str]:
    """The SQL statements ``run`` executes on ``db`` (with their parameters in place)."""
    seen: list[str] = []
    db.conn.set_trace_callback(seen.append)
    try:
        run()
    finally:
        db.conn.set_trace_callback(None)
    return [s for s in seen if s.lstrip().lower().startswith(("select", "delete", "with"))]


def plan(db: Any, sql: str) -> str:
    return "\n".join(row[3] for row in db.execute(f"explain query plan {sql}").fetchall())


@pytest.fixture
def db(tmp_path: Path) -> Any:
    database = open_database(tmp_path / "understudy.db")
    fill(database, 300, other_tasks=300)
    with database.conn:
        database["student_attempts"].insert_all(
            {"request_id": "req_00000001", "created_at": NOW, "task": "t", "student_version": "v",
             "kind": "failure"} for _ in range(3)
        )  # fmt: skip
        database["feedback"].insert({"request_id": "req_00000002", "created_at": NOW, "score": 1})
    # no ANALYZE: the product never runs it, so the planner sees what a gateway's would
    yield database
    database.conn.close()


def drain(rows: Any) -> None:
    for _ in rows:
        pass


READS: dict[str, Callable[[Any], Any]] = {
    "export": lambda db: drain(iter_teacher_pairs(db, "t")),
    "dataset rows": lambda db: drain(iter_log_rows(db, "t", limit=100)),
    "dataset rows, all": lambda db: drain(iter_log_rows(db, "t")),
    "new answers since": lambda db: count_teacher_answers(db, "t", since=NOW - 50),
    "failures": lambda db: failure_request_ids(db, "t"),
    "feedback": lambda db: latest_feedback(db, "t"),
    "a stored response": lambda db: find_response(db, "resp_1"),
    "retention count": lambda db: count_older(db, NOW - 100),
    "retention": lambda db: prune(db, NOW - 100, batch_size=50),
    "task names": lambda db: known_tasks(db),
    "fingerprinted tasks at start-up": lambda db: auto_tasks(db, 1000),
}


@pytest.mark.parametrize("read", list(READS))
def test_every_scanning_read_uses_an_index_of_its_own(db, read):
    """No statement walks the whole ``requests`` or ``student_attempts`` table, and the rows
    export and the dataset stream come in index order (no sort that holds them)."""
    ran = statements(db, lambda: READS[read](db))
    assert ran
    for sql in ran:
        found = plan(db, sql)
        assert "SCAN requests" not in found, (sql, found)
        assert "SCAN student_attempts" not in found, (sql, found)
        if read.startswith(("export", "dataset")):
            assert "TEMP B-TREE" not in found, (sql, found)


def test_the_dataset_reads_only_the_newest_rows_of_its_task(tmp_path):
    db = open_database(tmp_path / "u.db")
    fill(db, 50, other_tasks=20)
    rows = list(iter_log_rows(db, "t", limit=10))
    assert [r["id"] for r in rows] == [f"req_{i:08d}" for i in range(40, 50)]
    assert json.loads(rows[0]["request_json"])["messages"][0]["content"].endswith(" 40")
    assert list(iter_log_rows(db, "t", limit=0)) == []
    assert len(list(iter_log_rows(db, "t", limit=500))) == 50
    assert list(iter_log_rows(db, "nothing", limit=5)) == []


def test_task_names_come_from_the_index_one_seek_each(tmp_path):
    db = open_database(tmp_path / "u.db")
    fill(db, 30, task="auto-00aa", other_tasks=30)
    fill(db, 20, task="b", start=100)
    with db.conn:
        db.execute(
            "insert into requests (id, created_at, endpoint, task, task_source, served_by,"
            " status, request_json) values ('p1', 1, 'embeddings', 'only-relayed', 'header',"
            " 'passthrough', 'ok', '')"
        )
        db.execute("insert into golden_examples (task, created_at, input_json, expected)"
                   " values ('golden-only', 1, '\"hi\"', 'x')")  # fmt: skip
    assert known_tasks(db) == ["auto-00aa", "b", "golden-only", "other"]
    assert auto_tasks(db, 5) == ["auto-00aa"] and auto_tasks(db, 0) == []
    seeks = [s for s in statements(db, lambda: known_tasks(db)) if "from requests" in s]
    assert len(seeks) <= 2 + len(known_tasks(db))  # a few per name, never one per row


def peak_bytes(run: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_does_not_grow_with_the_log(tmp_path, capsys):
    data = tmp_path / "data"
    db = open_database(data / "understudy.db")
    fill(db, 2000)

    def export() -> None:
        out = tmp_path / "out.jsonl"
        assert main(["export", "--data-dir", str(data), "--task", "t", "--output", str(out)]) == 0

    export()  # imports and caches warmed before measuring
    small = peak_bytes(export)
    fill(db, 18000, start=2000)
    large = peak_bytes(export)
    db.conn.close()
    assert "exported 20000 examples" in capsys.readouterr().err
    assert large < small * 1.5 + 256 * 1024, (small, large)


def test_dataset_build_memory_does_not_grow_with_the_log(tmp_path):
    db = open_database(tmp_path / "u.db")
    config = DatasetConfig(max_examples=1000)
    fill(db, 2000)
    build_dataset(db, "t", config)
    small = peak_bytes(lambda: build_dataset(db, "t", config))
    fill(db, 18000, start=2000)
    dataset = None

    def build() -> None:
        nonlocal dataset
        dataset = build_dataset(db, "t", config)

    large = peak_bytes(build)
    assert dataset is not None and dataset.stats["log_rows"] == 1000
    assert large < small * 1.5 + 256 * 1024, (small, large)
