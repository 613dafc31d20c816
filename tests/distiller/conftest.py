"""Logging teacher traffic into a real SQLite database, the way the gateway does."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from understudy.storage.database import open_database
from understudy.storage.records import RequestRecord

SYSTEM = "Classify the customer's message. Answer with the intent name only."
_ids = itertools.count()


def chat_response(content: str | None, finish_reason: str = "stop", **message: Any) -> str:
    msg = {"role": "assistant", "content": content, **message}
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "teacher",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish_reason}],
        }
    )


def log_exchange(
    db: Any,
    task: str,
    user: str,
    answer: str | None,
    *,
    at: float,
    served_by: str = "teacher",
    status: str = "ok",
    finish_reason: str = "stop",
    system: str | None = SYSTEM,
    request_id: str | None = None,
    route_reason: str | None = None,
    response_json: str | None = None,
    teacher_model: str | None = None,
    **request: Any,
) -> str:
    """Write one request row as the gateway logs it; return its id."""
    request_id = request_id or f"req_{next(_ids)}"
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    body = {"model": "gpt-4o-mini", "messages": messages, **request}
    if response_json is None and answer is not None:
        response_json = chat_response(answer, finish_reason)
    record = RequestRecord(
        id=request_id,
        created_at=at,
        endpoint="chat.completions",
        task=task,
        task_source="header",
        requested_model="gpt-4o-mini",
        served_by=served_by,
        status=status,
        request_json=json.dumps(body),
        response_json=response_json,
        route_reason=route_reason,
        teacher_model=teacher_model,
    )
    with db.conn:
        db["requests"].insert(record.as_row())
    return request_id


def log_attempt(db: Any, request_id: str, task: str, text: str, kind: str, agreed: bool | None):
    with db.conn:
        db["student_attempts"].insert(
            {
                "request_id": request_id,
                "created_at": time.time(),
                "task": task,
                "student_version": f"{task}@v1",
                "kind": kind,
                "text": text,
                "confidence": 0.4,
                "agreed": None if agreed is None else int(agreed),
            }
        )


def log_feedback(
    db: Any, request_id: str, *, score: float | None = None, correction=None, reviewed=False
):
    with db.conn:
        db["feedback"].insert(
            {
                "request_id": request_id,
                "created_at": time.time(),
                "score": score,
                "correction": correction,
                "comment": None,
                "reviewed": int(reviewed),
            }
        )


@pytest.fixture
def db(tmp_path):
    database = open_database(tmp_path / "understudy.db")
    yield database
    database.conn.close()


INTENTS = {
    "card_arrival": ["my card has not arrived", "where is my new card", "card still not delivered"],
    "top_up": ["how do i top up", "add money to my account", "top up with a bank transfer"],
    "lost_card": ["i lost my card", "my card was stolen", "someone took my card"],
    "exchange_rate": [
        "what exchange rate do you use",
        "the exchange rate looks wrong",
        "rate for euros",
    ],
}
_OPEN = ["hi", "hello", "hey there", "good morning", "excuse me", "quick question", "help"]
_CLOSE = ["thanks", "please", "asap", "cheers", "thank you so much", "any idea", "urgent"]
_NAMES = ["anna", "ben", "chloe", "dev", "emma", "felix", "gina", "hugo", "iris", "jack"]


def intent_messages(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` varied customer messages with their intent, the intents in turn."""
    import random

    rng = random.Random(seed)
    labels = list(INTENTS)
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [
            rng.choice(_OPEN),
            rng.choice(_NAMES) + ",",
            rng.choice(INTENTS[label]),
            rng.choice(_CLOSE),
            str(rng.randint(10, 99999)),
        ]
        out.append((" ".join(words), label))
    return out


def log_intents(db: Any, task: str, n: int, *, start: float = 1000.0, seed: int = 0) -> list[str]:
    """Log ``n`` teacher answers of an intent task, one second apart; return their ids."""
    return [
        log_exchange(db, task, text, label, at=start + i)
        for i, (text, label) in enumerate(intent_messages(n, seed))
    ]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    """A tiny untrained base model whose tokenizer knows the intent task's words."""
    from understudy.student.tiny import build_tiny_model

    texts = [f"{SYSTEM} {text} {label}" for text, label in intent_messages(400)]
    path = tmp_path_factory.mktemp("tiny") / "base"
    return str(build_tiny_model(path, texts, hidden=64, layers=1, vocab_size=512))
