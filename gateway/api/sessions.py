"""Dashboard sessions: random tokens, kept (as their hash) with their expiry: in the database
when the gateway has one, so that every worker process shares them (``serve --workers N``),
else in memory.

A session token is never derived from the admin key; a session ends after ``SESSION_TTL_S``
or when signed out (:mod:`gateway.api.dashboard.access` sets and reads the cookie).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable

from understudy.storage.database import Store
from understudy.storage.sessions import add_session, end_session, session_expiry

SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000  # beyond it, the oldest session ends


class Sessions:
    """Dashboard sessions: random tokens, kept (as their hash) with their expiry."""

    def __init__(
        self,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
        *,
        store: Store | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.store = store
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self) -> str:
        """A new session's token (the cookie's value)."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        if self.store is not None:
            with self.store.write() as db:
                add_session(db, _digest(token), now + self.ttl_s, now=now, keep=MAX_SESSIONS)
            return token
        with self._lock:
            self._expiry = {h: t for h, t in self._expiry.items() if t > now}
            while len(self._expiry) >= MAX_SESSIONS:
                del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
            self._expiry[_digest(token)] = now + self.ttl_s
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        if self.store is not None:
            with self.store.read() as db:
                expiry = session_expiry(db, _digest(token))
            return expiry is not None and expiry > self.clock()
        with self._lock:
            expiry = self._expiry.get(_digest(token))
        return expiry is not None and expiry > self.clock()

    def end(self, token: str | None) -> None:
        """Revoke a session (sign-out)."""
        if token and self.store is not None:
            with self.store.write() as db:
                end_session(db, _digest(token))
        elif token:
            with self._lock:
                self._expiry.pop(_digest(token), None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
