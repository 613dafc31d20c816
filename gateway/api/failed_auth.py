"""Failed key checks per client address: logged, and throttled.

A client address that fails ``limits.failed_auth_per_minute`` key checks within a minute (a
wrong or missing gateway key, a wrong admin key, a wrong dashboard sign-in) gets 429 with
``retry-after`` on every key check until the oldest of those failures is a minute old, right
key or not: guessing keys costs a minute per handful of guesses. Each failure is logged with
the address and the path, never the key presented; once an address is throttled, one line
says so instead of one per attempt.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable

from litestar import Request

from understudy.gateway.errors import RateLimitError

log = logging.getLogger("understudy.auth")

WINDOW_S = 60.0
MAX_ADDRESSES = 10000  # addresses remembered; the oldest failures are forgotten first


def client_address(request: Request) -> str:
    """The caller's address: the connection's, or a trusted proxy's ``X-Forwarded-For``
    (uvicorn rewrites it only for ``trusted_proxies``)."""
    return request.client.host if request.client else "unknown"


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
        raise RateLimitError(
            f"Too many failed authentication attempts from this address; "
            f"try again in {math.ceil(wait)}s."
        ).with_headers({"retry-after": str(max(1, math.ceil(wait)))})

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
            log.warning(
                "failed authentication from %s on %s: %d failures in a minute; its key checks "
                "get 429 for a minute",
                address,
                path,
                len(times),
            )

    def _forget(self, now: float) -> None:
        for address, times in list(self._failures.items()):
            if not times or times[-1] + WINDOW_S <= now:
                del self._failures[address]
        while len(self._failures) >= MAX_ADDRESSES:  # all recent: drop the oldest address
            del self._failures[next(iter(self._failures))]
