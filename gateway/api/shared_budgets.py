"""Monthly budgets exact across every gateway process on one database.

A request is admitted in one transaction under its key's lock: the key's logged usage this
month (the rollups) plus the tokens held by its requests in flight in every process must be
below ``limits.monthly_tokens``, and the request's own hold (its body's tokens and
``limits.reserve_tokens``) is written in the same transaction (:func:`storage.limits.hold_budget`).
Once a request is answered its hold becomes the tokens it used (at this process's next
admission or sweep), and it counts until the request's row is logged, when the rollups count
the row instead (both commit together, so nothing is counted twice or missed in between); a
request that ends without a row releases its hold a moment later. The process that owns a hold
renews its lease every second; a process killed with requests in flight leaves holds that lapse
within ``limits.budget_lease_s``.

What that guarantees: a key's month ends below ``monthly_tokens`` plus the tokens of the one
request that crossed the line (as with one process), as long as each request uses no more than
it held; a request that uses more (a longer answer than ``reserve_tokens``) adds its excess.
The USD limit counts every logged request at admission; requests in flight hold no USD.

When the database cannot answer, the process falls back to its own count (the rollups as last
read, and its own requests in flight) rather than refuse or stall requests.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from understudy.storage.database import Store, open_database
from understudy.storage.engine import Database, error_types
from understudy.storage.limits import (
    drop_holds,
    hold_budget,
    logged_holds,
    renew_holds,
    settle_holds,
)

log = logging.getLogger("understudy.limits")

SWEEP_S = 1.0
"""How often a process renews its holds and removes those it no longer needs."""
UNLOGGED_GRACE_S = 2.0
"""How long a request that ended without a row keeps its hold (a row may still be submitted)."""
DROPPED_ROW_S = 600.0
"""A hold whose row was submitted but never logged (the row dropped) ends after this."""


class LocalBudgets(Protocol):
    """The per-process budgets (``limits.MonthlyBudgets``): the limits, the month, a fallback."""

    monthly_tokens: int
    monthly_usd: float

    def check(self, key: str) -> str | None: ...

    def reserve(self, request_id: str, key: str, tokens: int) -> None: ...

    def settle(self, request_id: str) -> None: ...

    def renews_in(self) -> float: ...

    def month(self) -> float: ...


@dataclass
class _Hold:
    logged_at: float | None = None  # when its row was submitted to the log
    ended_at: float | None = None  # when its response ended


class SharedBudgets:
    """Budgets checked and held in the database; ``local`` answers while it cannot."""

    def __init__(
        self,
        local: LocalBudgets,
        store: Store,
        lease_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = local
        self.monthly_tokens, self.monthly_usd = local.monthly_tokens, local.monthly_usd
        self.store, self.lease_s, self.clock = store, max(lease_s, 2 * SWEEP_S), clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._holds: dict[str, _Hold] = {}
        self._used: dict[str, int] = {}  # answered, hold not yet set to what it used
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connections = threading.local()

    @contextmanager
    def _write(self) -> Iterator[Database]:
        """A connection for one transaction: PostgreSQL's pool, or a SQLite connection kept
        open per thread (opening one costs more than the admission itself)."""
        if self.store.postgres:
            with self.store.write() as pg:
                yield pg
            return
        db = getattr(self._connections, "db", None)
        if db is None:
            db = open_database(
                self.store.path, busy_timeout_ms=self.store.busy_timeout_ms, migrate_schema=False
            )
            self._connections.db = db
        try:
            with db.conn:
                yield db
        except error_types():
            self._connections.db = None
            db.conn.close()
            raise

    def admit(self, request_id: str, key: str, tokens: int) -> str | None:
        """None when ``key`` may start a request (holding ``tokens`` of its budget, when the
        budget counts tokens), else which budget it has used up."""
        hold = tokens if self.monthly_tokens else 0
        now = self.clock()
        used = self._take_used()
        try:
            with self._write() as db:
                budget = hold_budget(
                    db,
                    request_id,
                    key,
                    tokens=hold,
                    monthly_tokens=self.monthly_tokens,
                    monthly_usd=self.monthly_usd,
                    since=self.local.month(),
                    owner=self.owner,
                    expires_at=now + self.lease_s,
                    now=now,
                    used=used,
                )
        except error_types() as exc:  # the database is away: count in this process meanwhile
            self._give_back(used)
            log.warning("shared budgets unavailable (%s); counting in this process", exc)
            refused = self.local.check(key)
            if refused is None and hold:
                self.local.reserve(request_id, key, hold)
            return refused
        if budget.admitted:
            if hold:
                with self._lock:
                    self._holds[request_id] = _Hold()
                self._start()
            return None
        if self.monthly_tokens and budget.tokens + budget.held >= self.monthly_tokens:
            return f"{self.monthly_tokens} tokens"
        return f"{self.monthly_usd:g} USD"

    def record(self, table: str, row: dict[str, Any]) -> None:
        """Writer listener: a request of ours has its row on the way to the log."""
        if table != "requests" or row.get("id") is None:
            return
        rid = str(row["id"])
        with self._lock:
            hold = self._holds.get(rid)
            if hold is not None and hold.logged_at is None:
                hold.logged_at = self.clock()
                self._used[rid] = int(row.get("total_tokens") or 0)

    def _take_used(self) -> list[tuple[str, int]]:
        with self._lock:
            used, self._used = list(self._used.items()), {}
        return used

    def _give_back(self, used: list[tuple[str, int]]) -> None:
        with self._lock:
            for rid, tokens in used:
                self._used.setdefault(rid, tokens)

    def settle(self, request_id: str) -> None:
        """The request's response has ended (or it was refused after its hold was written)."""
        self.local.settle(request_id)
        with self._lock:
            hold = self._holds.get(request_id)
            if hold is not None and hold.ended_at is None:
                hold.ended_at = self.clock()

    def renews_in(self) -> float:
        return self.local.renews_in()

    def sweep(self) -> None:
        """Renew this process's holds; remove those whose rows are logged, those of requests
        that ended without a row, and every lapsed hold (of processes gone)."""
        with self._lock:
            if not self._holds:
                return
        now = self.clock()
        used = self._take_used()
        try:
            with self.store.write() as db:
                settle_holds(db, used)
                renew_holds(db, self.owner, now + self.lease_s)
                logged = set(logged_holds(db, self.owner))
        except error_types():
            self._give_back(used)
            raise
        with self._lock:
            done = [rid for rid, hold in self._holds.items() if rid in logged or _over(hold, now)]
            for rid in done:
                del self._holds[rid]
        with self.store.write() as db:
            drop_holds(db, done, lapsed_before=now)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="understudy-budget-holds", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SWEEP_S):
            try:
                self.sweep()
            except error_types() as exc:  # renewed at the next sweep; a lease outlasts several
                log.warning("budget holds not renewed (%s); retrying", exc)

    def close(self) -> None:
        """Stop renewing (the holds left lapse, or count no more once their rows are logged)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None


def _over(hold: _Hold, now: float) -> bool:
    """Whether a hold whose row is not logged is no longer needed."""
    if hold.logged_at is not None:
        return hold.logged_at < now - DROPPED_ROW_S
    return hold.ended_at is not None and hold.ended_at < now - UNLOGGED_GRACE_S
