"""Failed key checks counted in the database: processes count one address's failures together,
learn of its throttling from the database, and count alone while it cannot answer."""

from __future__ import annotations

import sqlite3

import pytest

from understudy.gateway.api.failed_auth import SharedFailedAuth
from understudy.gateway.errors import RateLimitError
from understudy.storage.database import Store


def test_processes_count_an_address_together_and_learn_of_its_throttling(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    now = [1000.0]
    one, two = (SharedFailedAuth(3, store, wall=lambda: now[0]) for _ in range(2))
    one.failed("10.0.0.9", "/v1/chat/completions")
    two.failed("10.0.0.9", "/v1/chat/completions")
    one.check("10.0.0.9")
    one.failed("10.0.0.9", "/v1/chat/completions")  # the third: 401 still, then throttled
    with pytest.raises(RateLimitError):
        one.check("10.0.0.9")
    two._read(now[0])  # the other process re-reads the throttled addresses
    with pytest.raises(RateLimitError):
        two.check("10.0.0.9")
    two.check("10.0.0.8")  # another address is not
    now[0] += 61  # the oldest failure is a minute old
    one.check("10.0.0.9")


def test_a_process_that_had_not_heard_refuses_the_next_failure(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    now = [1000.0]
    one, two = (SharedFailedAuth(2, store, wall=lambda: now[0]) for _ in range(2))
    two._read(now[0])  # its last re-read: before the failures, its next one a second away
    one.failed("a", "/p")
    one.failed("a", "/p")
    two.check("a")  # not heard yet: the key is judged
    with pytest.raises(RateLimitError):
        two.failed("a", "/p")  # a third failure in the minute: 429, not 401


def test_a_database_that_cannot_answer_leaves_the_process_counting(tmp_path):
    store = Store(tmp_path / "u.db", busy_timeout_ms=50)
    store.migrate()
    shared = SharedFailedAuth(2, store)
    other = sqlite3.connect(tmp_path / "u.db")
    other.execute("begin exclusive")
    try:
        shared.failed("a", "/p")
        shared.failed("a", "/p")
        with pytest.raises(RateLimitError):
            shared.check("a")
    finally:
        other.rollback()
        other.close()
