"""Rate-limit buckets in the database, leased by several processes at once, on either engine."""

from __future__ import annotations

import threading

import pytest

from understudy.storage.database import Store, open_database
from understudy.storage.rate_limits import lease_tokens


def test_a_bucket_starts_full_refills_at_the_rate_and_says_how_long_to_wait(address):
    store = Store(address)
    store.migrate()
    with store.write() as db:
        assert lease_tokens(db, "k", rate=0.5, capacity=4, want=3, now=100.0) == (3, 0.0)
        assert lease_tokens(db, "k", rate=0.5, capacity=4, want=3, now=100.0) == (1, 0.0)
        taken, wait = lease_tokens(db, "k", rate=0.5, capacity=4, want=3, now=100.0)
        assert taken == 0 and wait == pytest.approx(2.0)
        assert lease_tokens(db, "k", rate=0.5, capacity=4, want=3, now=103.0) == (1, 0.0)
        assert lease_tokens(db, "k", rate=0.5, capacity=4, want=9, now=1000.0) == (4, 0.0)
        assert lease_tokens(db, "other", rate=0.5, capacity=4, want=1, now=1000.0) == (1, 0.0)


def test_racing_processes_never_take_more_than_the_bucket_holds(address):
    Store(address).migrate()
    start = threading.Barrier(6)
    taken: list[int] = []

    def lease_all() -> None:
        db = open_database(address, migrate_schema=False, busy_timeout_ms=5000)
        try:
            start.wait()
            for _ in range(10):
                got, _ = lease_tokens(db, "k", rate=1e-6, capacity=20, want=1, now=50.0)
                taken.append(got)
        finally:
            db.conn.close()

    threads = [threading.Thread(target=lease_all) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 20 and len(taken) == 60
