"""Monthly budgets exact across every gateway process on one database.

A request is admitted in one transaction under its key's lock: the key's logged usage this
month (the rollups) plus what its requests in flight in every process hold must be below
``limits.monthly_tokens`` (and, for ``limits.monthly_usd``, the logged teacher USD plus the USD
held below it), and the request's own hold is written in the same transaction
(:func:`storage.limits.hold_budget`). A request holds its body's tokens and
``limits.reserve_tokens`` for the answer, and that estimate's worst-case teacher cost: the body
at the dearest input price of the cost book's table and the answer at its dearest output price
(the router may defer any request to the teacher, whatever model it names). Once a request is
answered its hold becomes what it used (its tokens and teacher USD, at this process's next
admission or sweep), and it counts until the request's row is logged, when the rollups count
the row instead (both commit together, so nothing is counted twice or missed in between); a
request that ends without a row releases its hold a moment later. The process that owns a hold
renews its lease every second; a process killed with requests in flight leaves holds that lapse
within ``limits.budget_lease_s``.

A busy key does not take a database transaction per request: an admission also takes a slice
of the key's remaining budget for this process (room for ``SLICE_S`` of the key's admissions
in the process at their recent rate, in requests like this one; at most half of what the month
has left once the request is held), and the process admits the next
requests from its slice without asking. Their holds are written in a batch by the next sweep
or admission, in the transaction that shrinks the slice by as much: counted once throughout
(or, for a moment, twice: never less). A slice is given back within ``SLICE_S`` + ``SWEEP_S``
of being taken, or as the process's next admission of the key asks the database; a killed
process's slice lapses with its holds.

What that guarantees, on every engine and across any number of processes: a key's month ends
below each limit plus the one request that crossed the line (as with one process), as long as
each request uses no more than it held. Slices and holds together never exceed the budget, so
only an admission in the database can cross the line. A request that uses more than it held
(a longer answer than ``reserve_tokens``) adds its excess. What slices cost: a request may be
refused while another process's slice still holds part of the budget (at most half of what
was left when it was taken, given back within a second or so).

When the database cannot answer, the process falls back to its own count (the rollups as last
read, and its own requests in flight) rather than refuse or stall requests; its slice, held in
the database, still admits meanwhile.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from understudy.storage.database import Store, open_database
from understudy.storage.engine import Database, error_types
from understudy.storage.limits import (
    Hold,
    drop_holds,
    flush_slice,
    hold_budget,
    logged_holds,
    renew_holds,
    settle_holds,
)

log = logging.getLogger("understudy.limits")

SWEEP_S = 1.0
"""How often a process renews its holds, writes those of requests admitted from its slices,
and removes those it no longer needs."""
SLICE_S = 0.5
"""A slice holds room for about this many seconds of a key's admissions in the process, and is
given back at the first sweep once it is this old."""
MAX_SLICE = 1000
"""The most requests one slice holds room for."""
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
    used: Hold | None = None  # what it used, once answered


@dataclass
class _Slice:
    """This process's slice of one key's budget."""

    tokens: int = 0
    usd: float = 0.0
    """What is left of it to admit from."""
    taken_at: float = 0.0
    """When the key's last admission in the database took it (0.0: never)."""
    admitted: int = 0
    """Requests admitted from it."""
    pending: list[Hold] = field(default_factory=list)
    """Requests admitted from it whose holds are not written yet (the slice holds them)."""
    turn: threading.Lock = field(default_factory=threading.Lock)
    """The key's admissions in the database and its flushes take turns in this process."""


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
        self._used: dict[str, Hold] = {}  # answered, hold not yet set to what it used
        self._slices: dict[str, _Slice] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connections = threading.local()
        self.transactions = 0
        """Admissions that asked the database (the rest came from slices)."""

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

    def _slice_id(self, key: str) -> str:
        return f"slice:{self.owner}:{key}"

    def admit(self, request_id: str, key: str, tokens: int, usd: float = 0.0) -> str | None:
        """None when ``key`` may start a request (holding ``tokens`` and ``usd`` of its
        budget), else which budget it has used up."""
        piece = self._slices.get(key)
        if piece is None:
            with self._lock:
                piece = self._slices.setdefault(key, _Slice())
        if self._from_slice(piece, request_id, tokens, usd):
            return None
        with piece.turn:
            if self._from_slice(piece, request_id, tokens, usd):  # another thread took one
                return None
            return self._admit_in_database(piece, request_id, key, tokens, usd)

    def _from_slice(self, piece: _Slice, request_id: str, tokens: int, usd: float) -> bool:
        """Admit from this process's slice of the key's budget, when it has room."""
        with self._lock:
            if piece.taken_at == 0.0 or not self._fits(piece, tokens, usd):
                return False
            piece.tokens -= tokens
            piece.usd -= usd
            piece.admitted += 1
            piece.pending.append(Hold(request_id, tokens, usd))
            self._holds[request_id] = _Hold()
        self._start()
        return True

    def _fits(self, piece: _Slice, tokens: int, usd: float) -> bool:
        if piece.tokens <= 0 and piece.usd <= 0:  # none taken, or used up
            return False
        if self.monthly_tokens and tokens > piece.tokens:
            return False
        return not (self.monthly_usd and usd > piece.usd)

    def _admit_in_database(
        self, piece: _Slice, request_id: str, key: str, tokens: int, usd: float
    ) -> str | None:
        now = self.clock()
        with self._lock:  # the slice is given back in the transaction: nothing more from it
            pending, piece.pending = piece.pending, []
            piece.tokens, piece.usd = 0, 0.0
            want = _slice_wanted(piece, now)
        used = self._take_used()
        try:
            with self._write() as db:
                budget = hold_budget(
                    db,
                    request_id,
                    key,
                    tokens=tokens,
                    usd=usd,
                    monthly_tokens=self.monthly_tokens,
                    monthly_usd=self.monthly_usd,
                    since=self.local.month(),
                    owner=self.owner,
                    expires_at=now + self.lease_s,
                    now=now,
                    used=used,
                    pending=self._with_used(pending),
                    slice_id=self._slice_id(key),
                    slice_requests=want,
                )
        except error_types() as exc:  # the database is away: count in this process meanwhile
            self._give_back(used)
            with self._lock:  # the slice still holds them in the database
                piece.pending[:0] = pending
            log.warning("shared budgets unavailable (%s); counting in this process", exc)
            refused = self.local.check(key)
            if refused is None:
                self.local.reserve(request_id, key, tokens)
            return refused
        self.transactions += 1
        with self._lock:
            piece.taken_at, piece.admitted = now, 0
            if budget.admitted:
                self._holds[request_id] = _Hold()
                piece.tokens = budget.slice_requests * tokens
                piece.usd = budget.slice_requests * usd
        self._start()
        if budget.admitted:
            return None
        if self.monthly_tokens and budget.tokens + budget.held >= self.monthly_tokens:
            return f"{self.monthly_tokens} tokens"
        return f"{self.monthly_usd:g} USD"

    def _with_used(self, pending: list[Hold]) -> list[Hold]:
        """``pending``, each answered one as what it used."""
        with self._lock:
            out = []
            for h in pending:
                hold = self._holds.get(h.id)
                out.append(hold.used if hold is not None and hold.used is not None else h)
            return out

    def record(self, table: str, row: dict[str, Any]) -> None:
        """Writer listener: a request of ours has its row on the way to the log."""
        if table != "requests" or row.get("id") is None:
            return
        rid = str(row["id"])
        with self._lock:
            hold = self._holds.get(rid)
            if hold is not None and hold.logged_at is None:
                hold.logged_at = self.clock()
                used = Hold(
                    rid, int(row.get("total_tokens") or 0), float(row.get("teacher_cost_usd") or 0)
                )
                hold.used = self._used[rid] = used

    def _take_used(self) -> list[Hold]:
        with self._lock:
            used, self._used = list(self._used.values()), {}
        return used

    def _give_back(self, used: list[Hold]) -> None:
        with self._lock:
            for h in used:
                self._used.setdefault(h.id, h)

    def settle(self, request_id: str) -> None:
        """The request's response has ended (or it was refused after its hold was written)."""
        self.local.settle(request_id)
        with self._lock:
            hold = self._holds.get(request_id)
            if hold is not None and hold.ended_at is None:
                hold.ended_at = self.clock()

    def renews_in(self) -> float:
        return self.local.renews_in()

    def flush(self, *, give_back: bool = False) -> None:
        """Write the holds of the requests admitted from this process's slices, shrinking each
        slice by as much; give back the slices older than ``SLICE_S`` (all: ``give_back``)."""
        now = self.clock()
        with self._lock:
            keys = [k for k, p in self._slices.items() if p.pending or p.tokens or p.usd]
        for key in keys:
            piece = self._slices[key]
            with piece.turn:
                with self._lock:
                    pending, piece.pending = piece.pending, []
                    ending = give_back or now - piece.taken_at >= SLICE_S
                    if ending:
                        piece.tokens, piece.usd = 0, 0.0
                    left = Hold(self._slice_id(key), piece.tokens, piece.usd)
                if not pending and not ending:
                    continue
                try:
                    with self.store.write() as db:
                        flush_slice(
                            db,
                            key,
                            self.owner,
                            now + self.lease_s,
                            slice_id=left.id,
                            pending=self._with_used(pending),
                            left=left,
                        )
                except error_types():
                    with self._lock:  # written at the next sweep; the slice holds them
                        piece.pending[:0] = pending
                    raise

    def sweep(self) -> None:
        """Write the holds of requests admitted from slices; renew this process's holds;
        remove those whose rows are logged, those of requests that ended without a row, and
        every lapsed hold (of processes gone)."""
        self.flush()
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
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
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
        """Stop renewing, after writing the holds of requests admitted from slices and giving
        the slices back (the holds left lapse, or count no more once their rows are logged)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        try:
            self.flush(give_back=True)
        except error_types() as exc:  # the slices lapse with their lease
            log.warning("budget slices not given back (%s)", exc)


def _slice_wanted(piece: _Slice, now: float) -> int:
    """How many requests a new slice of the key should hold room for: the process's rate of
    admissions of the key since its last admission in the database (this one included) over
    ``SLICE_S``; none for a key seen for the first time, or idle for a while."""
    if piece.taken_at == 0.0:
        return 0
    n = piece.admitted + 1
    elapsed = max(now - piece.taken_at, SLICE_S / 10)  # at most ten times more each time
    return min(MAX_SLICE, math.floor(n * SLICE_S / elapsed))


def _over(hold: _Hold, now: float) -> bool:
    """Whether a hold whose row is not logged is no longer needed."""
    if hold.logged_at is not None:
        return hold.logged_at < now - DROPPED_ROW_S
    return hold.ended_at is not None and hold.ended_at < now - UNLOGGED_GRACE_S
