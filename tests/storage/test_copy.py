"""``understudy migrate-db --to postgresql://...``: a SQLite database with real traffic copied
into a new PostgreSQL database: every table, row for row, at the same schema version, and the
product reads the same answers from the copy."""

from __future__ import annotations

import time

from understudy.cli import main
from understudy.storage import queries, registry, reports
from understudy.storage.database import open_database
from understudy.storage.distill_queries import add_golden, insert_run, list_golden
from understudy.storage.migrations import applied
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter

NOW = time.time()


def _traffic(data) -> None:
    writer = RequestLogWriter(data / "understudy.db", commit_interval_ms=10)
    writer.start()
    for i in range(1500):
        row = RequestRecord(
            id=f"req_{i}",
            created_at=NOW - 3600 * (i % 48),
            endpoint="chat.completions",
            task="intent" if i % 3 else "summary",
            task_source="header",
            requested_model="m",
            served_by="teacher" if i % 2 else "student",
            status="ok",
            request_json=f'{{"messages": [{{"role": "user", "content": "question {i}"}}]}}',
            response_json=f'{{"choices": [{{"message": {{"content": "answer {i} \\u00e9"}}}}]}}',
            prompt_tokens=10 + i % 7,
            completion_tokens=3,
            total_tokens=13 + i % 7,
            api_key_id="key-a" if i % 5 else None,
        ).as_row()
        writer.submit("requests", {**row, "teacher_cost_usd": 0.001 * (i % 4)})
        writer.submit(
            "student_attempts",
            {
                "request_id": row["id"],
                "created_at": row["created_at"],
                "task": row["task"],
                "student_version": "intent@v1",
                "kind": "shadow",
                "agreed": i % 2,
            },
        )
    writer.close()
    db = open_database(data / "understudy.db")
    try:
        first = registry.register_model(db, "intent", base="tiny", metrics={"agreement": 0.9})
        registry.promote(db, first.id)
        registry.promote(db, registry.register_model(db, "intent", base="tiny").id)
        add_golden(db, "intent", input_value="card lost?", expected="lost_card")
        insert_run(db, {"id": "run1", "task": "intent", "started_at": NOW, "status": "succeeded"})
        with db.conn:
            db.execute(
                "insert into feedback (request_id, created_at, score) values (?, ?, ?)",
                ["req_1", NOW, 1.0],
            )
    finally:
        db.conn.close()


def _table(db, table: str) -> list[tuple]:
    return sorted(
        (tuple(sorted(r.items())) for r in db.query(f'select * from "{table}"')), key=repr
    )


def test_migrate_db_copies_every_table_at_the_same_schema_version(tmp_path, postgres_url, capsys):
    data = tmp_path / "data"
    _traffic(data)
    assert main(["migrate-db", "--data-dir", str(data), "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    assert "copied" in out and "1500 requests" in out and "storage.url" in out

    sqlite = open_database(data / "understudy.db")
    pg = open_database(postgres_url, migrate_schema=False)
    try:
        assert applied(pg) == applied(sqlite)
        tables = [t for t in sqlite.table_names() if t not in ("_migrations", "heartbeat")]
        assert set(tables) <= set(pg.table_names())
        for table in tables:
            assert _table(pg, table) == _table(sqlite, table), table
        # What the product reads from the copy is what it read from the file.
        assert registry.champion(pg, "intent") == registry.champion(sqlite, "intent")
        assert queries.get_request(pg, "req_7") == queries.get_request(sqlite, "req_7")
        assert reports.cost_totals(pg, NOW - 86400 * 3, NOW + 1) == reports.cost_totals(
            sqlite, NOW - 86400 * 3, NOW + 1
        )
        assert reports.cost_by(pg, "day", 0, NOW + 1) == reports.cost_by(sqlite, "day", 0, NOW + 1)
        # Ids handed out after the copy continue after the copied ones.
        new_id = add_golden(pg, "intent", input_value="atm?", expected="atm")
        assert new_id > max(g["id"] for g in list_golden(sqlite))
    finally:
        pg.conn.close()
        sqlite.conn.close()

    # A second copy into the same database is refused, and nothing is added.
    assert main(["migrate-db", "--data-dir", str(data), "--to", postgres_url]) == 1
    assert "not empty" in capsys.readouterr().err
    pg = open_database(postgres_url, migrate_schema=False)
    assert pg.execute("select count(*) from requests").fetchone()[0] == 1500
    pg.conn.close()


def test_migrate_db_refuses_what_it_cannot_copy(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["migrate-db", "--data-dir", str(data), "--to", "postgresql://h/db"]) == 2
    assert "no database" in capsys.readouterr().err
    assert not (data / "understudy.db").exists()  # a missing source is not created
    _traffic(data)
    assert main(["migrate-db", "--data-dir", str(data), "--to", "sqlite:///other.db"]) == 2
    assert "postgresql://" in capsys.readouterr().err
