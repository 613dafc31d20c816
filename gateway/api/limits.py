"""Per-key request limits and monthly token budgets, enforced before a request is handled.

* Rate limit: a token bucket per client (``limits.requests_per_minute``, bursts up to
  ``limits.burst``), in memory; with ``limits.rate_lease_s`` (on PostgreSQL unless set to 0)
  in the database, shared by every process (:mod:`gateway.api.shared_limits`). A client is its
  gateway key (by its non-secret id); with an open gateway, the hash of the teacher key it
  passes through, or else its address.
* Budget: tokens and teacher USD used per gateway key in the current calendar month (UTC). A key
  at or over ``limits.monthly_tokens`` (or ``limits.monthly_usd``) is refused until the month
  ends; the request that crosses the line is still answered. Requests in flight count too: each
  holds an estimate (its body at four characters a token plus ``limits.reserve_tokens`` for the
  answer, and that estimate's worst-case teacher USD at the cost table's dearest prices)
  until its row is logged, so a burst of concurrent requests cannot all start on the same
  unspent budget. The gateway checks and holds in the database
  (:mod:`gateway.api.shared_budgets`): exact across every process and replica on it.
  :class:`MonthlyBudgets` is the count of one process (the rollups re-read at most every
  ``BUDGET_REFRESH_S``, off the request path, plus its own rows and requests in flight): what a
  process falls back to while the database cannot answer.

Both refusals are 429 in OpenAI's shape with ``retry-after``; nothing refused reaches the
teacher or the log. The check is a dependency of the answering endpoints (chat and
completions), resolved before the handler runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request

from understudy.gateway.accounting.prices import highest_price, price_table
from understudy.gateway.api import auth
from understudy.gateway.api.responses import request_id
from understudy.gateway.api.shared_budgets import SharedBudgets
from understudy.gateway.api.shared_limits import SharedTokenBuckets
from understudy.gateway.config import GatewayConfig, LimitConfig
from understudy.gateway.errors import BudgetExceededError, RateLimitError, UnderstudyError
from understudy.storage.database import Store
from understudy.storage.limits import logged_ids, usage_since

log = logging.getLogger("understudy.limits")

MAX_IDLE_BUCKETS = 10000  # buckets kept before full (idle) ones are forgotten
RESERVATION_TTL_S = 600.0  # a reservation never settled (a row never logged) lapses
BUDGET_REFRESH_S = 1.0  # how often the budgets re-read every process's usage from the rollups
CHARS_PER_TOKEN = 4
DEFAULT_RATE_LEASE_S = 0.5
"""``limits.rate_lease_s`` on PostgreSQL when it is not set (BENCHMARKS.md, PostgreSQL and
replicas: no cost measured, where a lease per request costs a database round trip)."""


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One bucket per client: ``rate`` tokens a second, holding at most ``capacity``."""

    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst or per_minute)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, client: str) -> float:
        """Spend one token; 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_IDLE_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        for client, b in list(self._buckets.items()):
            if b.tokens + (now - b.at) * self.rate >= self.capacity:
                del self._buckets[client]


def month_start(now: float) -> float:
    """The first second of ``now``'s calendar month, UTC."""
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    return dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC).timestamp()


def next_month_start(now: float) -> float:
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp()


class MonthlyBudgets:
    """Tokens and teacher USD used this month per gateway key id: the rollups' sums at the last
    refresh, plus the rows this process logged that the refresh did not see. A limit of 0 is
    off."""

    def __init__(
        self,
        monthly_tokens: int,
        monthly_usd: float = 0.0,
        clock: Callable[[], float] = time.time,
        refresh_s: float = BUDGET_REFRESH_S,
    ) -> None:
        self.monthly_tokens = monthly_tokens
        self.monthly_usd = monthly_usd
        self.clock = clock
        self.refresh_s = refresh_s
        self._month = month_start(clock())
        self._tokens: dict[str, int] = {}  # the rollups' sums at the last refresh
        self._usd: dict[str, float] = {}
        self._pending: dict[str, tuple[str, int, float, float]] = {}  # id -> key, tokens, usd, at
        self._pending_sums: dict[str, tuple[int, int, float]] = {}  # key -> rows, tokens, usd
        self._held: dict[str, tuple[str, int, float]] = {}  # request id -> key, tokens, expiry
        self._reserved: dict[str, int] = {}
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._refreshed = float("-inf")
        self._refreshing = False
        self._unnamed = itertools.count()

    def load(self, store: Store) -> None:
        """Read this month's usage per key from the log (at start-up); refreshed from it later."""
        self._store = store
        self.refresh()

    def refresh(self) -> None:
        """Re-read this month's usage from the rollups: every process's logged rows. Rows this
        process submitted stay counted on their own until the read sees them."""
        if self._store is None:
            return
        with self._lock:
            self._roll()
            month, waiting = self._month, list(self._pending)
        with self._store.read() as db:
            seen = logged_ids(db, waiting)  # before the sums: a row seen here is in them
            usage = usage_since(db, month)
        with self._lock:
            self._refreshed = self.clock()
            if month != self._month:
                return
            self._tokens = {key: tokens for key, (tokens, _) in usage.items()}
            self._usd = {key: usd for key, (_, usd) in usage.items()}
            lapsed = self.clock() - RESERVATION_TTL_S  # a row never written (dropped) lapses
            for rid, (_, _, _, at) in list(self._pending.items()):
                if rid in seen or at < lapsed:
                    self._unpend(rid)

    def record(self, table: str, row: dict[str, Any]) -> None:
        """Writer listener: count the usage of every logged request carrying a key id."""
        key = row.get("api_key_id")
        if table != "requests" or not key:
            return
        rid = str(row["id"]) if row.get("id") is not None else f"unnamed-{next(self._unnamed)}"
        self.settle(rid)
        tokens, usd = row.get("total_tokens") or 0, row.get("teacher_cost_usd") or 0.0
        with self._lock:
            self._roll()
            if row.get("created_at", self._month) >= self._month and rid not in self._pending:
                self._pending[rid] = (str(key), int(tokens), float(usd), self.clock())
                self._add_pending(str(key), 1, int(tokens), float(usd))

    def _add_pending(self, key: str, rows: int, tokens: int, usd: float) -> None:
        n, t, u = self._pending_sums.get(key, (0, 0, 0.0))
        if n + rows:
            self._pending_sums[key] = (n + rows, t + tokens, u + usd)
        else:
            self._pending_sums.pop(key, None)

    def _unpend(self, rid: str) -> None:
        key, tokens, usd, _ = self._pending.pop(rid)
        self._add_pending(key, -1, -tokens, -usd)

    def used(self, key: str) -> tuple[int, float]:
        """``(tokens, teacher USD)`` used by ``key`` this month."""
        self._refresh_soon()
        with self._lock:
            self._roll()
            _, pending_tokens, pending_usd = self._pending_sums.get(key, (0, 0, 0.0))
            return (
                self._tokens.get(key, 0) + pending_tokens,
                self._usd.get(key, 0.0) + pending_usd,
            )

    def _refresh_soon(self) -> None:
        """Start a refresh on a thread of its own when the last is older than ``refresh_s``."""
        with self._lock:
            due = self.clock() - self._refreshed >= self.refresh_s
            if self._store is None or self._refreshing or not due:
                return
            self._refreshing = True
        threading.Thread(target=self._background_refresh, daemon=True).start()

    def _background_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:  # a busy database keeps the last sums
            log.warning("budget usage not refreshed from the log", exc_info=True)
        finally:
            with self._lock:
                self._refreshing = False

    def month(self) -> float:
        """The first second of the current month (UTC)."""
        with self._lock:
            self._roll()
            return self._month

    def admit(self, request_id: str, key: str, tokens: int, usd: float = 0.0) -> str | None:
        """After :meth:`check` let ``key`` in: hold ``tokens`` for its request (token budgets;
        in one process requests in flight hold no USD)."""
        if self.monthly_tokens:
            self.reserve(request_id, key, tokens)
        return None

    def reserve(self, request_id: str, key: str, tokens: int) -> None:
        """Hold ``tokens`` of ``key``'s budget for a request in flight."""
        with self._lock:
            self._held[request_id] = (key, tokens, self.clock() + RESERVATION_TTL_S)
            self._reserved[key] = self._reserved.get(key, 0) + tokens

    def settle(self, request_id: str) -> None:
        """Release a request's reservation (its row is logged, or its response ended)."""
        with self._lock:
            held = self._held.pop(request_id, None)
            if held is not None:
                self._release(held[0], held[1])

    def reserved(self, key: str) -> int:
        with self._lock:
            now = self.clock()
            for rid, (k, tokens, expiry) in list(self._held.items()):
                if expiry <= now:
                    del self._held[rid]
                    self._release(k, tokens)
            return self._reserved.get(key, 0)

    def _release(self, key: str, tokens: int) -> None:
        left = self._reserved.get(key, 0) - tokens
        if left > 0:
            self._reserved[key] = left
        else:
            self._reserved.pop(key, None)

    def check(self, key: str) -> str | None:
        """None while ``key`` may spend more (counting what its requests in flight reserve),
        else which budget it has used up."""
        tokens, usd = self.used(key)
        if self.monthly_tokens:
            tokens += self.reserved(key)
        if self.monthly_tokens and tokens >= self.monthly_tokens:
            return f"{self.monthly_tokens} tokens"
        if self.monthly_usd and usd >= self.monthly_usd:
            return f"{self.monthly_usd:g} USD"
        return None

    def renews_in(self) -> float:
        """Seconds until the budgets renew (the next month, UTC)."""
        now = self.clock()
        return max(1.0, next_month_start(now) - now)

    def _roll(self) -> None:
        start = month_start(self.clock())
        if start != self._month:
            self._month, self._tokens, self._usd = start, {}, {}
            self._pending, self._pending_sums = {}, {}


class RequestLimits:
    """What the ``limited_key_id`` dependency (:mod:`gateway.api.guards`) consults: the
    buckets and the budgets (either may be off)."""

    def __init__(self, settings: GatewayConfig) -> None:
        self.settings = settings
        limits: LimitConfig = settings.limits
        self.buckets: TokenBuckets | SharedTokenBuckets | None = (
            TokenBuckets(limits.requests_per_minute, limits.burst)
            if limits.requests_per_minute > 0
            else None
        )
        self.budgets: MonthlyBudgets | SharedBudgets | None = (
            MonthlyBudgets(limits.monthly_tokens, limits.monthly_usd)
            if limits.monthly_tokens > 0 or limits.monthly_usd > 0
            else None
        )
        self.dearest = highest_price(price_table(settings.costs.prices))
        """What a request in flight's USD hold is priced at."""

    def client(self, request: Request) -> tuple[str | None, str | None]:
        """``(bucket name, gateway key id)`` of the caller; the bucket is None for a caller
        whose gateway key is missing or wrong (the handler answers 401)."""
        s, headers = self.settings, request.headers
        authorization = headers.get("authorization")
        if s.api_keys:
            presented = (
                headers.get(auth.KEY_HEADER)
                if s.teacher.pass_through_auth
                else auth.bearer(authorization)
            )
            if not auth.matches(presented, s.api_keys):
                return None, None
            key = auth.key_id(presented or "")
            return key, key
        passed = auth.bearer(authorization) if s.teacher.pass_through_auth else None
        if passed:
            return auth.key_id(passed), None
        host = request.client.host if request.client else "unknown"
        return f"addr:{host}", None

    def check(self, request: Request) -> tuple[UnderstudyError, float] | None:
        """The refusal for this caller and the seconds it should wait, or None."""
        refused, key = self._gate(request)
        if refused is not None or key is None or self.budgets is None:
            return refused
        tokens, usd = self._estimate(request)
        spent = self.budgets.admit(request_id(request), key, tokens, usd)
        return self._over_budget(self.budgets, spent)

    async def check_async(self, request: Request) -> tuple[UnderstudyError, float] | None:
        """:meth:`check`, the shared budget's database transaction on a worker thread: the
        event loop serves other requests meanwhile."""
        refused, key = self._gate(request)
        budgets = self.budgets
        if refused is not None or key is None or budgets is None:
            return refused
        rid, (tokens, usd) = request_id(request), self._estimate(request)
        if isinstance(budgets, SharedBudgets):
            spent = await asyncio.to_thread(budgets.admit, rid, key, tokens, usd)
        else:
            spent = budgets.admit(rid, key, tokens, usd)
        return self._over_budget(budgets, spent)

    def _gate(self, request: Request) -> tuple[tuple[UnderstudyError, float] | None, str | None]:
        """The rate limit, and this process's own budget count: ``(refusal, None)``, or
        ``(None, the key whose budget is to be checked and held)`` (None: no budget)."""
        bucket, key = self.client(request)
        if bucket is None:
            return None, None
        budgets = self.budgets if key is not None else None
        if isinstance(budgets, MonthlyBudgets):  # this process's count: checked first
            refused = self._over_budget(budgets, budgets.check(key or ""))
            if refused is not None:
                return refused, None
        if self.buckets is not None:
            wait = self.buckets.take(bucket)
            if wait:
                return (
                    RateLimitError(
                        "Rate limit reached: "
                        f"{self.settings.limits.requests_per_minute} requests per minute per "
                        f"key. Please try again in {math.ceil(wait)}s."
                    ),
                    wait,
                ), None
        return None, key if budgets is not None else None

    @staticmethod
    def _over_budget(
        budgets: MonthlyBudgets | SharedBudgets, spent: str | None
    ) -> tuple[UnderstudyError, float] | None:
        if not spent:
            return None
        return BudgetExceededError(
            f"This key has used its monthly budget ({spent}); it renews at the start "
            "of next month (UTC)."
        ), budgets.renews_in()

    def _estimate(self, request: Request) -> tuple[int, float]:
        """Tokens a request may use (its body's, and ``limits.reserve_tokens`` for the answer)
        and their worst-case teacher USD: the body at the dearest input price of the cost
        book's table, the answer at its dearest output price (the router may defer any request
        to the teacher, whichever model it names)."""
        try:
            size = int(request.headers.get("content-length") or 0)
        except ValueError:
            size = 0
        body, answer = math.ceil(size / CHARS_PER_TOKEN), self.settings.limits.reserve_tokens
        usd = self.dearest.cost(body, answer) if self.settings.limits.monthly_usd else 0.0
        return body + answer, usd

    def settle(self, request: Request) -> None:
        """The response has ended: release what the request reserved (an ``after_response``
        hook; the row's own logging usually released it already)."""
        if self.budgets is not None:
            rid = getattr(request.state, "request_id", None)
            if rid is not None:
                self.budgets.settle(rid)

    def close(self) -> None:
        """Stop the budgets' background work (the holds' renewal)."""
        if isinstance(self.budgets, SharedBudgets):
            self.budgets.close()


def open_limits(settings: GatewayConfig, store: Store) -> RequestLimits | None:
    """The limits of ``settings`` (budgets read from the log), or None when both are off."""
    limits = RequestLimits(settings)
    if limits.buckets is None and limits.budgets is None:
        return None
    lease_s = settings.limits.rate_lease_s
    if lease_s is None:  # shared where replicas are likely: on PostgreSQL
        lease_s = DEFAULT_RATE_LEASE_S if store.postgres else 0.0
    if limits.buckets is not None and lease_s > 0:  # shared by every process on the database
        limits.buckets = SharedTokenBuckets(limits.buckets, store, lease_s)
    if limits.budgets is not None:
        limits.budgets.load(store)
        limits.budgets = SharedBudgets(limits.budgets, store, settings.limits.budget_lease_s)
    return limits
