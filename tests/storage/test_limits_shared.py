"""What gateway processes on one database share to keep limits exact, on either engine: budget
holds of requests in flight, failed key checks per address, and rate buckets pruned."""

from __future__ import annotations

import threading
import time

import pytest

from tests.gateway.test_budgets_across_workers import row
from understudy.storage.database import Store, open_database
from understudy.storage.limits import (
    Hold,
    add_auth_failure,
    auth_lockouts,
    drop_holds,
    flush_slice,
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
        usd=kw.pop("usd_hold", 0.0),
        **kw,
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


def test_requests_in_flight_hold_their_worst_case_usd_until_their_row_is_logged(address):
    store = Store(address)
    store.migrate()
    with store.write() as db:
        assert hold(db, "a", limit=0, usd=0.10, usd_hold=0.04).admitted
        assert hold(db, "b", limit=0, usd=0.10, usd_hold=0.04, owner="p2").admitted  # 0.04 held
        third = hold(db, "c", limit=0, usd=0.10, usd_hold=0.04)  # 0.08 held: still below
        assert third.admitted and third.held_usd == pytest.approx(0.08)
        assert not hold(db, "d", limit=0, usd=0.10, usd_hold=0.04).admitted  # 0.12 held
    with store.write() as db:  # a answered for 0.01: its row counts instead of its hold
        write_rows(db, "requests", [row("a", "k", 1, usd=0.01)])
    with store.write() as db:
        after = hold(db, "e", limit=0, usd=0.10, usd_hold=0.04)
        assert after.usd == pytest.approx(0.01) and after.held_usd == pytest.approx(0.08)
        assert after.admitted  # 0.09 < 0.10
        assert not hold(db, "f", limit=0, usd=0.10, usd_hold=0.001).admitted


def test_a_slice_holds_at_most_half_of_what_is_left_and_its_requests_move_to_holds(address):
    store = Store(address)
    store.migrate()
    with store.write() as db:
        first = hold(db, "r1", tokens=10, slice_id="s1", slice_requests=100)
        # 90 left once r1 is held: a slice of half, 4 requests like it
        assert first.admitted and first.slice_requests == 4
        other = hold(db, "r2", tokens=10, owner="p2")
        assert other.held == 50  # r1 and p1's slice
        # p1 admitted two requests from its slice; it writes their holds and keeps 20
        flush_slice(
            db,
            "k",
            "p1",
            time.time() + 30,
            slice_id="s1",
            pending=[Hold("r3", 10), Hold("r4", 10)],
            left=Hold("s1", 20),
        )
        assert hold(db, "x", tokens=10, owner="p2", limit=0).held == 60  # 4 holds, 20 of slice
        # p1 asks again: its slice is given back, what it admitted is held on its own
        again = hold(
            db, "r5", tokens=10, slice_id="s1", slice_requests=100, pending=[Hold("r6", 10)]
        )
        assert again.admitted and again.held == 60 and again.slice_requests == 1  # 30 left: half
        ids = {r[0] for r in db.execute("select id from budget_reservations").fetchall()}
        assert ids == {"r1", "r2", "r3", "r4", "r5", "r6", "x", "s1"}
        # slices never hold the budget past its end: only a request admitted here crosses it
        assert hold(db, "r7", tokens=10, owner="p2").held == 80  # 70 and p1's slice
        assert hold(db, "r8", tokens=15, owner="p2").admitted  # 90 held: crosses the line
        assert not hold(db, "r9", tokens=1, owner="p2").admitted  # 105 held


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
