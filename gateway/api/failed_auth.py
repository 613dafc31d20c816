"""Failed key checks per client address: logged, and throttled.

A client address that fails ``limits.failed_auth_per_minute`` key checks within a minute (a
wrong or missing gateway key, a wrong admin key, a wrong dashboard sign-in) gets 429 with
``retry-after`` on every key check until the oldest of those failures is a minute old, right
key or not: guessing keys costs a minute per handful of guesses. Each failure is logged with
the address and the path, never the key presented; once an address is throttled, one line
says so instead of one per attempt.

Gateway processes on one database count together (:class:`SharedFailedAuth`): each failure is
written to the database and its answer comes from the count there, so an address gets
``failed_auth_per_minute`` failures a minute across every process and replica, not that many in
each. A process learns that an address is throttled from its own next failure there, or from
the throttled addresses it re-reads every ``REFRESH_S``; until then it may judge one more key
from that address: at most ``failed_auth_per_minute + N - 1`` keys judged a minute across N
processes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from litestar import Request

from understudy.gateway.errors import RateLimitError
from understudy.storage.database import Store
from understudy.storage.engine import error_types
from understudy.storage.limits import add_auth_failure, auth_lockouts, prune_auth_failures

log = logging.getLogger("understudy.auth")

WINDOW_S = 60.0
MAX_ADDRESSES = 10000  # addresses remembered; the oldest failures are forgotten first
REFRESH_S = 1.0  # how often a process re-reads the addresses throttled by any process
PRUNE_S = 60.0  # how often it also removes failures older than the window


def throttled(wait: float) -> RateLimitError:
    """The 429 of an address throttled for ``wait`` more seconds."""
    return RateLimitError(
        f"Too many failed authentication attempts from this address; "
        f"try again in {math.ceil(wait)}s."
    ).with_headers({"retry-after": str(max(1, math.ceil(wait)))})


def client_address(request: Request) -> str:
    """The caller's address: the connection's, or a trusted proxy's ``X-Forwarded-For``
    (uvicorn rewrites it only for ``trusted_proxies``)."""
    return request.client.host if request.client else "unknown"


def _warn_throttled(address: str, path: str, failures: int) -> None:
    log.warning(
        "failed authentication from %s on %s: %d failures in a minute; its key checks "
        "get 429 for a minute",
        address,
        path,
        failures,
    )


class FailedAuth:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def check(self, address: str) -> None:
        """Raise 429 while ``address`` is throttled."""
        if not self.per_minute:
            return
        times = self._failures.get(address)
        if times is None or len(times) < self.per_minute:
            return
        wait = times[0] + WINDOW_S - self.clock()
        if wait <= 0:
            times.popleft()
            return
        raise throttled(wait)

    def failed(self, address: str, path: str) -> None:
        """Count and log one failed key check of ``address`` on ``path``."""
        if not self.per_minute:
            log.warning("failed authentication from %s on %s", address, path)
            return
        now = self.clock()
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= MAX_ADDRESSES:
                self._forget(now)
            times = self._failures[address] = deque()
        while times and times[0] + WINDOW_S <= now:
            times.popleft()
        times.append(now)
        if len(times) < self.per_minute:
            log.warning("failed authentication from %s on %s", address, path)
        elif len(times) == self.per_minute:
            _warn_throttled(address, path, len(times))

    def _forget(self, now: float) -> None:
        for address, times in list(self._failures.items()):
            if not times or times[-1] + WINDOW_S <= now:
                del self._failures[address]
        while len(self._failures) >= MAX_ADDRESSES:  # all recent: drop the oldest address
            del self._failures[next(iter(self._failures))]


class SharedFailedAuth(FailedAuth):
    """Failures counted in the database, shared by every process on it; this process's own
    count (the base class) while the database cannot answer."""

    def __init__(
        self, per_minute: int, store: Store, wall: Callable[[], float] = time.time
    ) -> None:
        super().__init__(per_minute)
        self.store, self.wall = store, wall
        self._until: dict[str, float] = {}  # address -> end of its throttling, as last known
        self._lock = threading.Lock()
        self._read_at = self._pruned_at = float("-inf")
        self._reading = False

    def check(self, address: str) -> None:
        super().check(address)  # failures counted here while the database was away
        if not self.per_minute:
            return
        now = self.wall()
        self._read_soon(now)
        until = self._until.get(address)
        if until is not None and until > now:
            raise throttled(until - now)

    def failed(self, address: str, path: str) -> None:
        """Count the failure in the database; raise 429 when the address was already
        throttled by another process (this one had not heard yet)."""
        if not self.per_minute:
            super().failed(address, path)
            return
        now = self.wall()
        try:
            with self.store.write() as db:
                times = add_auth_failure(db, address, now, WINDOW_S)
        except error_types() as exc:  # the database is away: count in this process meanwhile
            log.warning("shared failed-auth counts unavailable (%s); counting here", exc)
            super().failed(address, path)
            return
        if len(times) >= self.per_minute:
            until = times[0] + WINDOW_S
            with self._lock:
                if len(self._until) >= MAX_ADDRESSES:
                    self._until = {a: t for a, t in self._until.items() if t > now}
                self._until[address] = until
            if len(times) > self.per_minute:
                raise throttled(until - now)
            _warn_throttled(address, path, len(times))
            return
        log.warning("failed authentication from %s on %s", address, path)

    def _read_soon(self, now: float) -> None:
        with self._lock:
            if self._reading or now - self._read_at < REFRESH_S:
                return
            self._reading, self._read_at = True, now
        threading.Thread(target=self._read, args=(now,), daemon=True).start()

    def _read(self, now: float) -> None:
        """Re-read the addresses any process throttled (off the request path)."""
        try:
            with self.store.read() as db:
                oldest = auth_lockouts(db, now - WINDOW_S, self.per_minute)
            with self._lock:  # what this process learned meanwhile stays
                self._read_at = max(self._read_at, now)
                known = {a: t for a, t in self._until.items() if t > now}
                self._until = {a: t + WINDOW_S for a, t in oldest.items()}
                for a, t in known.items():
                    self._until[a] = max(t, self._until.get(a, t))
            if now - self._pruned_at >= PRUNE_S:
                with self.store.write() as db:
                    prune_auth_failures(db, now - WINDOW_S)
                self._pruned_at = now
        except error_types() as exc:
            log.warning("throttled addresses not re-read (%s)", exc)
        finally:
            with self._lock:
                self._reading = False


def open_failed_auth(per_minute: int, store: Store) -> FailedAuth:
    """Failed key checks counted across every process on ``store``'s database."""
    return SharedFailedAuth(per_minute, store)
