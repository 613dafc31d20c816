"""Bodies kept compact: the log stores request and response JSON as zstd frames (with a
dictionary trained on the log's own bodies), and every reader gets the text back; rows logged
before compression read as they were."""

from __future__ import annotations

import json
import random
import time

import pytest

from understudy.storage import bodies
from understudy.storage.database import open_database
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
        "select request_json, response_json, request_body, response_body from requests"
        " where id = 'req_7'"
    ).fetchone()
    assert stored[0] == "" and stored[1] is None  # no text left in the old columns
    assert isinstance(stored[2], bytes) and isinstance(stored[3], bytes)
    assert get_request(db, "req_7")["request_json"] == rows[7]["request_json"]
    assert get_request(db, "req_7")["response_json"] == rows[7]["response_json"]
    assert get_request(db, "req_50")["response_json"] is None
    pairs = list(iter_teacher_pairs(db, "t"))
    assert [p["request"] for p in pairs] == [json.loads(r["request_json"]) for r in rows[:50]]
    assert [p["response"] for p in pairs] == [json.loads(r["response_json"]) for r in rows[:50]]
    assert count_teacher_answers(db, "t") == 50  # the errored row has no answer
    learned = {r["id"]: r for r in iter_log_rows(db, "t")}
    assert learned["req_3"]["request_json"] == rows[3]["request_json"]
    assert "request_body" not in learned["req_3"]


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
    last = db.execute("select response_body from requests where id = ?", [rows[-1]["id"]])
    assert bodies.zstandard.get_frame_parameters(last.fetchone()[0]).dict_id == dictionaries[0][0]
    bodies._dictionaries.clear()  # a process that never saw it reads it from the database
    texts = {p["id"]: p["response"] for p in iter_teacher_pairs(db, "t")}
    assert texts == {r["id"]: json.loads(r["response_json"]) for r in rows}
    # and frames written with it are much smaller than without
    sizes = db.execute(
        "select sum(length(request_body) + length(response_body)) from requests"
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
    frame = db.execute("select request_body from requests where id = 'req_5000'").fetchone()[0]
    assert bodies.zstandard.get_frame_parameters(frame).dict_id != 0


def test_a_body_that_is_not_utf8_is_cleaned_not_lost(address):
    rng = random.Random(4)
    bad = row(0, rng, response_json='{"x": "\ud83d"}')
    log_rows(address, [bad, row(1, rng)])
    db = open_database(address)
    assert get_request(db, "req_0")["response_json"] == '{"x": "?"}'
    assert get_request(db, "req_1") is not None
