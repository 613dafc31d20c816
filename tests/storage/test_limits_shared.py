"""What gateway processes on one database share to keep limits exact, on either engine: budget
holds of requests in flight, failed key checks per address, and rate buckets pruned."""

from __future__ import annotations

import threading
import time

from tests.gateway.test_budgets_across_workers import row
from understudy.storage.database import Store, open_database
from understudy.storage.limits import (
    add_auth_failure,
    auth_lockouts,
    drop_holds,
    hold_budget,
    logged_holds,
    prune_auth_failures,
    renew_holds,
)
from understudy.storage.rate_limits import lease_tokens
from understudy.storage.request_log import write_rows

MONTH = 0.0  # every row below is logged after it


def hold(db, rid: str, key: str = "k", tokens: int = 30, limit: int = 100, **kw):
    now = kw.pop("now", time.time())
    return hold_budget(
        db,
        rid,
        key,
        tokens=tokens,
        monthly_tokens=limit,
        monthly_usd=kw.pop("usd", 0.0),
        since=MONTH,
        owner=kw.pop("owner", "p1"),
        expires_at=kw.pop("expires_at", now + 30),
        now=now,
    )


def test_holds_count_until_their_row_is_logged_then_the_row_counts(address):
    store = Store(address)
    store.migrate()
    with store.write() as db:
        assert hold(db, "r1").admitted  # 0 + 0 < 100
        assert hold(db, "r2", owner="p2").admitted  # another process's: 30 held
        third = hold(db, "r3")
        assert third.admitted and (third.tokens, third.held) == (0, 60)
        refused = hold(db, "r4")  # 90 held by three in flight: 90 < 100, still admitted
        assert refused.admitted and refused.held == 90
        assert not hold(db, "r5").admitted  # 120 held
        assert hold(db, "other", key="k2").admitted  # another key's budget
    with store.write() as db:
        write_rows(db, "requests", [row("r1", "k", 7, usd=0.01)])  # r1 answered with 7 tokens
    with store.write() as db:
        after = hold(db, "r6")
        assert (after.tokens, after.held) == (7, 90) and after.admitted  # 7 + 90 < 100
        assert logged_holds(db, "p1") == ["r1"] and logged_holds(db, "p2") == []


def test_a_lapsed_hold_counts_no_more_and_its_owner_renews_it(address):
    store = Store(address)
    store.migrate()
    with store.write() as db:
        assert hold(db, "dead", tokens=95, owner="gone", now=1000.0, expires_at=1010.0).admitted
        assert hold(db, "live", tokens=5, owner="p1", now=1000.0, expires_at=1010.0).admitted
        assert not hold(db, "x", now=1005.0).admitted  # 100 held by both
        renew_holds(db, "p1", 2000.0)
        late = hold(db, "y", tokens=1, now=1011.0)  # the dead owner's lapsed
        assert late.admitted and late.held == 5
        drop_holds(db, ["y"], lapsed_before=1011.0)
        rows = db.execute("select id from budget_reservations order by id").fetchall()
        assert [r[0] for r in rows] == ["live"]


def test_the_usd_limit_counts_logged_spend(address):
    store = Store(address)
    store.migrate()
    with store.write() as db:
        write_rows(db, "requests", [row("a", "k", 1, usd=0.01), row("b", "k", 1, usd=0.01)])
    with store.write() as db:
        assert hold(db, "c", limit=0, usd=0.03).admitted  # 0.02 spent
        assert not hold(db, "d", limit=0, usd=0.02).admitted
        assert not hold(db, "e", limit=0, tokens=0, usd=0.02).admitted
        rows = db.execute("select id from budget_reservations").fetchall()
        assert [r[0] for r in rows] == ["c"]


def test_racing_processes_never_hold_more_than_the_budget(address):
    Store(address).migrate()
    start = threading.Barrier(6)
    admitted: list[bool] = []

    def try_many(n: int) -> None:
        db = open_database(address, migrate_schema=False, busy_timeout_ms=10000)
        try:
            start.wait()
            for i in range(8):
                admitted.append(hold(db, f"p{n}-{i}", tokens=10, limit=100, owner=f"p{n}").admitted)
        finally:
            db.conn.close()

    threads = [threading.Thread(target=try_many, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 48 and sum(admitted) == 10  # 0, 10, ..., 90 held: ten admitted


def test_failed_key_checks_are_counted_per_address_across_connections(address):
    Store(address).migrate()
    one = open_database(address, migrate_schema=False)
    two = open_database(address, migrate_schema=False)
    try:
        assert add_auth_failure(one, "10.0.0.1", 100.0, 60.0) == [100.0]
        assert add_auth_failure(two, "10.0.0.1", 110.0, 60.0) == [100.0, 110.0]
        assert add_auth_failure(two, "10.0.0.2", 111.0, 60.0) == [111.0]
        assert auth_lockouts(one, 50.0, 2) == {"10.0.0.1": 100.0}
        assert add_auth_failure(one, "10.0.0.1", 165.0, 60.0) == [110.0, 165.0]  # 100 forgotten
        prune_auth_failures(two, 112.0)
        assert auth_lockouts(one, 0.0, 1) == {"10.0.0.1": 165.0}
    finally:
        one.conn.close()
        two.conn.close()


def test_rate_buckets_full_again_are_pruned_as_leases_are_written(address):
    store = Store(address)
    store.migrate()
    with store.write() as db:
        for i in range(50):  # idle clients: each bucket full again 8 s later (4 at 0.5 a second)
            lease_tokens(db, f"c{i}", rate=0.5, capacity=4, want=1, now=100.0)
        lease_tokens(db, "busy", rate=0.5, capacity=4, want=4, now=105.0)
        assert db.execute("select count(*) from rate_buckets").fetchone()[0] == 51
        lease_tokens(db, "late", rate=0.5, capacity=4, want=1, now=100.0 + 8.5, prune=True)
        left = db.execute("select client from rate_buckets order by client").fetchall()
        assert [r[0] for r in left] == ["busy", "late"]
        # a pruned bucket is full, as a bucket never seen is
        assert lease_tokens(db, "c1", rate=0.5, capacity=4, want=9, now=109.0) == (4, 0.0)
