"""Repeated names kept short: the log writes a row's endpoint family, task source, requested
and teacher model as a code naming a row of ``log_names``; every reader gets the names back,
rows written as text (imports, older logs) read as they are, and migration ``0020_short_names``
converts a log written before it, again after an interruption."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.storage.test_bodies import log_rows, row
from understudy.storage import migrations, names
from understudy.storage.bodies import BodyEncoder
from understudy.storage.database import Store, open_database
from understudy.storage.distill_queries import iter_log_rows
from understudy.storage.queries import get_request, iter_teacher_pairs, most_requested_model
from understudy.storage.request_log import _insert, write_rows
from understudy.storage.responses import find_response

NAMES = {
    "task_source": "fingerprint",
    "requested_model": "gpt-4o-mini",
    "teacher_model": "gpt-4o-mini-2024-07-18",
}


def logged(n: int, seed: int = 11, **fields: Any) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [row(i, rng, **(NAMES | fields)) for i in range(n)]


def stored(db: Any, request_id: str) -> dict[str, Any]:
    """The row as the table holds it (no decoding)."""
    return next(db.query("select * from requests where id = ?", [request_id]))


def test_the_log_stores_a_request_row_in_fewer_bytes(tmp_path: Path) -> None:
    """2,000 chat rows as the log writes them take at most 180 bytes a row in ``requests``
    (SQLite's ``dbstat``, after ``vacuum``); with the names as text they took 217."""
    path = tmp_path / "u.db"
    log_rows(path, logged(2000))
    db = open_database(path)
    db.execute("vacuum")
    (size,) = db.execute("select sum(pgsize) from dbstat where name = 'requests'").fetchone()
    assert size / 2000 <= 180, size / 2000


def test_names_are_stored_as_codes_and_read_back_as_names(address: Any) -> None:
    rows = logged(30)
    rows[7] = row(7, random.Random(1), requested_model=None, endpoint="responses")
    rows[7]["response_id"], rows[7]["stored"] = "resp_7", 1
    log_rows(address, rows)
    db = open_database(address)
    raw = stored(db, "req_3")
    assert all(names.is_code(raw[c]) for c in names.CODED), raw
    assert stored(db, "req_7")["requested_model"] is None
    assert db.execute("select count(*) from log_names").fetchone()[0] == 6  # "header" too
    for r in rows:
        got = get_request(db, r["id"])
        assert {c: got[c] for c in names.CODED} == {c: r[c] for c in names.CODED}
    assert find_response(db, "resp_7")["endpoint"] == "responses"
    assert {r["endpoint"] for r in iter_log_rows(db, "t")} == {"chat.completions", "responses"}
    exported = {p["id"]: p for p in iter_teacher_pairs(db, "t")}
    assert exported["req_3"]["endpoint"] == "chat.completions"
    assert most_requested_model(db) == "gpt-4o-mini"


def test_rows_written_as_text_read_as_they_are(address: Any) -> None:
    """An import (``write_rows``) keeps its names as text; both kinds read the same."""
    db = open_database(address)
    write_rows(db, "requests", [row(100, random.Random(2), **NAMES)])
    db.conn.close()
    log_rows(address, logged(3))
    db = open_database(address)
    assert stored(db, "req_100")["teacher_model"] == NAMES["teacher_model"]
    for request_id in ("req_100", "req_1"):
        got = get_request(db, request_id)
        assert {c: got[c] for c in NAMES} == NAMES


def test_a_name_added_by_a_failed_write_is_not_used_after_it(address: Any) -> None:
    """A batch that fails rolls back the names it added: the writer must not use their codes
    afterwards (the id would name another row of ``log_names``)."""
    db = open_database(address)
    coder = names.NameCoder()
    bad = [("requests", row(0, random.Random(3), teacher_model="model-a")), ("nowhere", {"x": 1})]
    with pytest.raises(Exception):  # noqa: B017 - the engine's own error for a missing table
        _insert(db, bad, None, coder)
    later = [row(1, random.Random(3), teacher_model="model-b"), row(2, random.Random(3))]
    later[1]["teacher_model"] = "model-a"
    for r in later:
        _insert(db, [("requests", r)], None, coder)
    assert get_request(db, "req_0") is None
    for r in later:
        got = get_request(db, r["id"])
        assert {c: got[c] for c in names.CODED} == {c: r[c] for c in names.CODED}


def logged_before_0020(address: Any, monkeypatch: pytest.MonkeyPatch, rows: list[dict]) -> None:
    """A database with every migration but ``0020_short_names``, and ``rows`` in it as the log
    wrote them then (bodies compressed, names as text)."""
    before = [m for m in migrations.MIGRATIONS if m[0] != "0020_short_names"]
    monkeypatch.setattr(migrations, "MIGRATIONS", before)
    db = open_database(address)
    monkeypatch.undo()
    encoder = BodyEncoder()
    for start in range(0, len(rows), 500):
        _insert(db, [("requests", r) for r in rows[start : start + 500]], encoder)
        encoder.maybe_train(db)
    db.conn.close()


def test_a_log_written_before_0020_is_converted_and_reads_back_the_same(
    address: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = logged(1200)
    logged_before_0020(address, monkeypatch, rows)
    db = open_database(address, migrate_schema=False)
    assert stored(db, "req_5")["teacher_model"] == NAMES["teacher_model"]
    db.conn.close()

    assert Store(address).migrate() == ["0020_short_names"]
    db = open_database(address)
    text = [f"{c} not like '{names.MARK}%'" for c in names.CODED]
    assert db.execute(f"select count(*) from requests where {' or '.join(text)}").fetchone() == (0,)
    for r in rows[::97]:
        got = get_request(db, r["id"])
        assert {c: got[c] for c in names.CODED} == {c: r[c] for c in names.CODED}


def test_a_conversion_cut_short_goes_on_where_it_stopped(
    address: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion interrupted after some rows were coded (or a migration run again) codes
    the rest and leaves the coded ones as they are."""
    rows = logged(700)
    logged_before_0020(address, monkeypatch, rows)
    db = open_database(address, migrate_schema=False)
    db.executescript(names.DDL)
    with db.conn:
        names.convert(db)  # every row coded once
    codes = dict(db.execute("select id, teacher_model from requests").fetchall())
    with db.conn:
        db.execute(
            "update requests set endpoint = 'chat.completions', teacher_model = ?"
            " where id in ('req_3', 'req_650')",
            [NAMES["teacher_model"]],
        )  # as if those were not reached
    db.conn.close()

    assert Store(address).migrate() == ["0020_short_names"]
    db = open_database(address)
    assert dict(db.execute("select id, teacher_model from requests").fetchall()) == codes
    assert db.execute("select count(*) from log_names").fetchone() == (4,)
    assert get_request(db, "req_650")["endpoint"] == "chat.completions"
