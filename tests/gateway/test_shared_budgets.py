"""Budgets held in the database: two processes' requests in flight count against one budget,
a hold ends once its row is logged (or a moment after a response without one), and a database
that cannot answer leaves the process counting on its own."""

from __future__ import annotations

import sqlite3
import time

from tests.gateway.test_budgets_across_workers import row
from understudy.gateway.api.limits import MonthlyBudgets
from understudy.gateway.api.shared_budgets import UNLOGGED_GRACE_S, SharedBudgets
from understudy.storage.database import Store
from understudy.storage.request_log import write_rows


def budgets(store: Store, clock, limit: int = 100) -> SharedBudgets:
    local = MonthlyBudgets(monthly_tokens=limit, clock=clock)
    local.load(store)
    return SharedBudgets(local, store, lease_s=30.0, clock=clock)


def held(store: Store, slices: bool = False) -> list[str]:
    """The ids of the requests holding budget (or of the processes' slices)."""
    with store.read() as db:
        ids = [r[0] for r in db.execute("select id from budget_reservations").fetchall()]
    return sorted(i for i in ids if i.startswith("slice:") == slices)


def test_two_processes_hold_one_budget_and_release_it_when_logged(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    now = [time.time()]
    a, b = budgets(store, lambda: now[0]), budgets(store, lambda: now[0])
    try:
        assert a.admit("r1", "k", 40) is None
        assert b.admit("r2", "k", 40) is None  # 40 held by the other process: 40 < 100
        assert b.admit("r3", "k", 40) is None  # 80 < 100
        assert a.admit("r4", "k", 40) == "100 tokens"  # 120 held in flight
        assert a.admit("r5", "other", 40) is None
        a.record("requests", {"id": "r1"})
        with store.write() as db:
            write_rows(db, "requests", [row("r1", "k", 10)])
        assert b.admit("r6", "k", 1) is None  # 10 logged + 80 held
        a.settle("r5")  # ended without a row: kept a moment (a row may still come)
        a.sweep()
        assert held(store) == ["r2", "r3", "r5", "r6"]
        now[0] += UNLOGGED_GRACE_S + 0.1
        a.sweep()
        assert held(store) == ["r2", "r3", "r6"]
    finally:
        a.close()
        b.close()


def test_a_database_that_cannot_answer_leaves_the_process_counting(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    shared = budgets(store, time.time, limit=50)
    shared.store = Store(tmp_path / "u.db", busy_timeout_ms=50)
    other = sqlite3.connect(tmp_path / "u.db")
    other.execute("begin exclusive")  # another process holds the file: locked
    try:
        assert shared.admit("r1", "k", 30) is None
        assert shared.admit("r2", "k", 30) is None  # 30 of 50 held in this process
        assert shared.admit("r3", "k", 30) == "50 tokens"
    finally:
        other.rollback()
        other.close()


def test_an_answered_request_holds_what_it_used_until_its_row_is_logged(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    a, b = budgets(store, time.time), budgets(store, time.time)
    try:
        assert a.admit("r1", "k", 100) is None  # its estimate holds the whole budget
        a.record("requests", {"id": "r1", "total_tokens": 10})  # answered; row not logged yet
        assert a.admit("r2", "k", 85) is None  # a sequential client goes on: 10 held
        assert b.admit("r3", "k", 5) is None  # 95 held, seen by the other process too
        assert b.admit("r4", "k", 5) == "100 tokens"
    finally:
        a.close()
        b.close()


def usd_budgets(store: Store, clock, limit: float) -> SharedBudgets:
    local = MonthlyBudgets(monthly_tokens=0, monthly_usd=limit, clock=clock)
    local.load(store)
    return SharedBudgets(local, store, lease_s=30.0, clock=clock)


def test_requests_in_flight_hold_usd_across_processes_until_answered(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    a, b = usd_budgets(store, time.time, 1.0), usd_budgets(store, time.time, 1.0)
    try:
        assert a.admit("r1", "k", 10, 0.4) is None
        assert b.admit("r2", "k", 10, 0.4) is None  # 0.4 held by the other process
        assert a.admit("r3", "k", 10, 0.4) is None  # 0.8 held: below 1
        assert b.admit("r4", "k", 10, 0.4) == "1 USD"  # 1.2 held in flight
        a.record("requests", {"id": "r1", "total_tokens": 10, "teacher_cost_usd": 0.05})
        assert a.admit("r5", "k", 10, 0.1) is None  # r1 holds what it cost: 0.85 held
        assert b.admit("r6", "k", 10, 0.1) is None  # 0.95 held
        assert b.admit("r7", "k", 10, 0.01) == "1 USD"
    finally:
        a.close()
        b.close()


def test_a_busy_key_is_admitted_from_slices_and_two_processes_keep_one_budget(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    now = [time.time()]
    a, b = budgets(store, lambda: now[0], 1000), budgets(store, lambda: now[0], 1000)
    admitted = 0
    try:
        for i in range(150):  # one process: a few transactions, the rest from its slices
            assert a.admit(f"a{i}", "k", 3) is None
            admitted += 3
        assert a.transactions <= 5, a.transactions
        refused = {"a": False, "b": False}
        for i in range(1000):  # both, until both are refused
            name, gw = ("a", a) if i % 3 else ("b", b)
            if gw.admit(f"x{i}", "k", 3) is None:
                admitted += 3
            else:
                refused[name] = True
            if all(refused.values()):
                break
        # below the budget plus the one request that crossed the line
        assert 1000 - 3 * 3 < admitted < 1000 + 3, admitted
        a.flush(give_back=True)
        b.flush(give_back=True)
        assert sum_held(store) == admitted  # each admission held once, slices given back
    finally:
        a.close()
        b.close()
    assert held(store) and not held(store, slices=True)


def sum_held(store: Store) -> int:
    with store.read() as db:
        return int(db.execute("select sum(tokens) from budget_reservations").fetchone()[0])
