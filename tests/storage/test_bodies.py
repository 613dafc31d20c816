"""Bodies kept compact: the log stores a request's and its response's JSON as one zstd frame
(with a dictionary trained on the log's own bodies), and every reader gets the text back; rows
logged in the older layouts (a frame per body, or text) read the same once migrated."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from understudy.storage import bodies, migrations
from understudy.storage.database import Store, open_database
from understudy.storage.distill_queries import count_teacher_answers, iter_log_rows
from understudy.storage.queries import get_request, iter_teacher_pairs
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter
from understudy.storage.responses import find_response

WORDS = [
    "card",
    "account",
    "transfer",
    "pending",
    "refund",
    "balance",
    "atm",
    "cash",
    "fee",
    "exchange",
    "rate",
    "top",
    "up",
    "lost",
    "stolen",
    "pin",
    "blocked",
    "verify",
    "identity",
    "statement",
    "payment",
    "declined",
    "limit",
    "travel",
    "abroad",
]
LABELS = ["card_arrival", "top_up_failed", "lost_or_stolen_card", "exchange_rate", "pin_blocked"]


def chat_bodies(i: int, rng: random.Random) -> tuple[str, str]:
    """A chat request and the teacher's answer, as the gateway logs them."""
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
    request = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You label customer messages. Answer with the intent."},
            {"role": "user", "content": f"{text} (#{i})"},
        ],
        "max_tokens": 16,
        "temperature": 0,
    }
    response = {
        "id": f"chatcmpl-{rng.getrandbits(96):024x}",
        "object": "chat.completion",
        "created": 1796148803 + i,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": rng.choice(LABELS)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 4, "total_tokens": 44},
    }
    return json.dumps(request), json.dumps(response)


def row(i: int, rng: random.Random, **fields) -> dict:
    request_json, response_json = chat_bodies(i, rng)
    record = RequestRecord(
        id=f"req_{i}",
        created_at=time.time() + i * 1e-3,
        endpoint="chat.completions",
        task="t",
        task_source="header",
        requested_model="gpt-4o-mini",
        served_by="teacher",
        status="ok",
        request_json=request_json,
        response_json=response_json,
    )
    for key, value in fields.items():
        setattr(record, key, value)
    return record.as_row()


def log_rows(path, *batches: list[dict]) -> None:
    """Log each batch of rows and wait for it to be written before the next."""
    writer = RequestLogWriter(path, commit_interval_ms=10)
    writer.start()
    for rows in batches:
        for r in rows:
            assert writer.submit("requests", r)
        assert writer.flush(30)
    writer.close()


def blob_dictionary(blob: bytes) -> int:
    """The dictionary id the frame of a ``bodies`` blob was compressed with (0: none)."""
    _, start = bodies._read_varint(bytes(blob))
    frame = bytes(blob)[start:]
    return bodies.zstandard.get_frame_parameters(frame, format=bodies._FORMAT).dict_id


@pytest.fixture(autouse=True)
def fresh_dictionary_cache(monkeypatch):
    """Each test reads dictionaries from its own database, as a new process would."""
    monkeypatch.setattr(bodies, "_dictionaries", {})


def test_logged_bodies_are_stored_compressed_and_read_back_as_text(address):
    rng = random.Random(0)
    rows = [row(i, rng) for i in range(50)]
    rows.append(row(50, rng, response_json=None, status="error"))
    log_rows(address, rows)
    db = open_database(address)
    stored = db.execute(
        "select request_json, response_json, bodies, request_body, response_body from requests"
        " where id = 'req_7'"
    ).fetchone()
    assert stored[0] == "" and stored[1] == ""  # no text left, '' says there is a response
    assert isinstance(stored[2], bytes) and stored[3] is None and stored[4] is None
    assert db.execute("select response_json from requests where id = 'req_50'").fetchone() == (
        None,
    )
    assert get_request(db, "req_7")["request_json"] == rows[7]["request_json"]
    assert get_request(db, "req_7")["response_json"] == rows[7]["response_json"]
    assert get_request(db, "req_50")["response_json"] is None
    pairs = list(iter_teacher_pairs(db, "t"))
    assert [p["request"] for p in pairs] == [json.loads(r["request_json"]) for r in rows[:50]]
    assert [p["response"] for p in pairs] == [json.loads(r["response_json"]) for r in rows[:50]]
    assert count_teacher_answers(db, "t") == 50  # the errored row has no answer
    learned = {r["id"]: r for r in iter_log_rows(db, "t")}
    assert learned["req_3"]["request_json"] == rows[3]["request_json"]
    assert "request_body" not in learned["req_3"] and "bodies" not in learned["req_3"]


def test_rows_logged_before_compression_still_read(address):
    rng = random.Random(1)
    old = row(0, rng, response_id="resp_old", stored=True)
    db = open_database(address)
    with db.conn:
        db["requests"].insert(old)  # text bodies, as logged before 0009_compact_bodies
    db.conn.close()
    log_rows(address, [row(1, rng, response_id="resp_new", stored=True)])
    db = open_database(address)
    assert find_response(db, "resp_old")["response_json"] == old["response_json"]
    assert json.loads(find_response(db, "resp_new")["request_json"])["max_tokens"] == 16
    assert [p["id"] for p in iter_teacher_pairs(db, "t")] == ["req_0", "req_1"]
    assert count_teacher_answers(db, "t") == 2


def test_a_dictionary_is_trained_from_the_log_and_read_by_another_process(address):
    rng = random.Random(2)
    rows = [row(i, rng) for i in range(bodies.SAMPLE_BODIES + 300)]
    log_rows(address, rows[: bodies.SAMPLE_BODIES], rows[bodies.SAMPLE_BODIES :])
    db = open_database(address)
    dictionaries = db.execute("select id from body_dictionaries").fetchall()
    assert len(dictionaries) == 1
    frames = [blob_dictionary(b) for (b,) in db.execute("select bodies from requests")]
    assert frames == [dictionaries[0][0]] * len(rows)  # the first rows compressed again with it
    bodies._dictionaries.clear()  # a process that never saw it reads it from the database
    texts = {p["id"]: p["response"] for p in iter_teacher_pairs(db, "t")}
    assert texts == {r["id"]: json.loads(r["response_json"]) for r in rows}
    # and frames written with it are much smaller than without
    sizes = db.execute(
        "select sum(length(bodies)) from requests"
        " where id in (select id from requests order by created_at desc limit 200)"
    ).fetchone()[0]
    raw = sum(len(r["request_json"]) + len(r["response_json"]) for r in rows[-200:])
    assert sizes * 3 < raw


def test_a_second_writer_uses_the_stored_dictionary(address):
    rng = random.Random(3)
    log_rows(address, [row(i, rng) for i in range(bodies.SAMPLE_BODIES + 10)])
    later = [row(5000 + i, rng) for i in range(bodies.SAMPLE_BODIES + 10)]
    log_rows(address, later)  # a new writer (a restart, another worker)
    db = open_database(address)
    assert db.execute("select count(*) from body_dictionaries").fetchone()[0] == 1
    blob = db.execute("select bodies from requests where id = 'req_5000'").fetchone()[0]
    assert blob_dictionary(blob) != 0


def test_a_body_that_is_not_utf8_is_cleaned_not_lost(address):
    rng = random.Random(4)
    bad = row(0, rng, response_json='{"x": "\ud83d"}')
    log_rows(address, [bad, row(1, rng)])
    db = open_database(address)
    assert get_request(db, "req_0")["response_json"] == '{"x": "?"}'
    assert get_request(db, "req_1") is not None


def migrated_to_0014(address, monkeypatch) -> Any:
    """A database with every migration but ``0015_one_body_frame`` (the layout before it)."""
    before = [m for m in migrations.MIGRATIONS if m[0] != "0015_one_body_frame"]
    monkeypatch.setattr(migrations, "MIGRATIONS", before)
    db = open_database(address)
    monkeypatch.undo()
    return db


def frame_per_body(db: Any, rows: list[dict]) -> None:
    """Log ``rows`` as the log wrote them from ``0009_compact_bodies`` to ``0014``: each body a
    zstd frame (magic number, dictionary id) in ``request_body`` / ``response_body``, with a
    dictionary trained on them and stored in ``body_dictionaries``."""
    texts = [r[c].encode() for r in rows for c in ("request_json", "response_json") if r[c]]
    trained = bodies.zstandard.train_dictionary(bodies.DICT_SIZE, texts, level=3)
    compressor = bodies.zstandard.ZstdCompressor(level=3, dict_data=trained, write_checksum=False)
    stored = []
    for r in rows:
        out = dict(r, request_body=None, response_body=None)
        for text_col, body_col in bodies.BODY_COLUMNS:
            if r[text_col]:
                out[body_col] = compressor.compress(r[text_col].encode())
                out[text_col] = "" if text_col == "request_json" else None
        stored.append(out)
    with db.conn:
        db.execute(
            "insert into body_dictionaries (id, created_at, samples, dictionary)"
            " values (?, ?, ?, ?)",
            [trained.dict_id(), time.time(), len(texts), trained.as_bytes()],
        )
        db["requests"].insert_all(stored)


def test_a_log_in_the_older_layouts_is_converted_and_reads_back_the_same(address, monkeypatch):
    """Rows with a frame per body (0009 to 0014) and rows with text (before 0009) are moved
    into one frame each by ``0015_one_body_frame``, in batches, and every reader gets the same
    text back: a request, export, the dataset rows, the Responses store."""
    rng = random.Random(5)
    framed = [row(i, rng) for i in range(700)]
    framed[3] = row(3, rng, response_json=None, status="error")
    framed[4] = row(4, rng, response_id="resp_framed", stored=True, endpoint="responses")
    framed[5] = row(5, rng, response_json="", status="incomplete")  # empty stays empty
    text = [row(1000 + i, rng) for i in range(600)]
    text[1] = row(1001, rng, response_id="resp_text", stored=True, endpoint="responses")
    db = migrated_to_0014(address, monkeypatch)
    frame_per_body(db, framed)
    with db.conn:
        db["requests"].insert_all(text)
    db.conn.close()

    assert Store(address).migrate() == ["0015_one_body_frame"]
    bodies._dictionaries.clear()
    db = open_database(address)
    everything = framed + text
    left = db.execute(
        "select count(*) from requests where bodies is null or request_body is not null"
        " or response_body is not null or request_json != ''"
    ).fetchone()[0]
    assert left == 0
    for r in everything:
        got = get_request(db, r["id"])
        assert (got["request_json"], got["response_json"]) == (
            r["request_json"],
            r["response_json"],
        ), r["id"]
    answered = [r for r in everything if r["status"] == "ok" and r["response_json"]]
    assert count_teacher_answers(db, "t") == len(answered)
    assert {p["id"]: p["response"] for p in iter_teacher_pairs(db, "t")} == {
        r["id"]: json.loads(r["response_json"]) for r in answered
    }
    learned = {r["id"]: r for r in iter_log_rows(db, "t")}
    assert learned["req_3"]["response_json"] is None
    assert learned["req_1007"]["request_json"] == text[7]["request_json"]
    assert find_response(db, "resp_framed")["response_json"] == framed[4]["response_json"]
    assert find_response(db, "resp_text")["request_json"] == text[1]["request_json"]
    smaller = db.execute("select sum(length(bodies)) from requests").fetchone()[0]
    assert smaller * 4 < sum(
        len(r["request_json"]) + len(r["response_json"] or "") for r in everything
    )


def test_a_text_log_gets_a_dictionary_when_converted(address, monkeypatch):
    rng = random.Random(6)
    rows = [row(i, rng) for i in range(bodies.SAMPLE_BODIES + 200)]
    db = migrated_to_0014(address, monkeypatch)
    with db.conn:
        db["requests"].insert_all(rows)
    db.conn.close()
    Store(address).migrate()
    db = open_database(address)
    (trained,) = [r[0] for r in db.execute("select id from body_dictionaries")]
    blobs = [b for (b,) in db.execute("select bodies from requests")]
    assert [blob_dictionary(b) for b in blobs] == [trained] * len(rows)
    bodies._dictionaries.clear()
    assert get_request(db, "req_17")["response_json"] == rows[17]["response_json"]


def test_a_conversion_cut_short_goes_on_where_it_stopped(address, monkeypatch):
    """SQLite commits a migration script's DDL at once: a gateway killed while ``0015`` was
    converting rows finds the column there on its next start, and converts the rest."""
    rng = random.Random(7)
    rows = [row(i, rng) for i in range(1200)]
    db = migrated_to_0014(address, monkeypatch)
    with db.conn:
        db["requests"].insert_all(rows)
    db.conn.close()

    def cut_short(db, batch=bodies.CONVERT_BATCH):
        raise KeyboardInterrupt  # killed before a batch was committed

    monkeypatch.setattr(bodies, "convert", cut_short)
    with pytest.raises(KeyboardInterrupt):
        Store(address).migrate()
    monkeypatch.undo()
    assert Store(address).migrate() == ["0015_one_body_frame"]
    db = open_database(address)
    assert db.execute("select count(*) from requests where bodies is null").fetchone()[0] == 0
    assert get_request(db, "req_1100")["response_json"] == rows[1100]["response_json"]
