"""Rate limits shared by every gateway process on one database (``limits.rate_lease_s`` > 0).

Each process leases a few tokens of a client's bucket from the database (enough for
``rate_lease_s`` of the rate, at least one) and spends them locally until they run out or the
lease ends; unspent leased tokens lapse, so the limit across processes is never exceeded, only
undershot by what leases left unspent. The database is asked once per lease, on the request
path; a client it refused is refused here until the wait it named has passed (no other process
can give tokens back). Once every ``PRUNE_S`` a lease also removes the buckets that are full
again. When it cannot answer, the process falls back to a bucket of its own (the rate per
process) rather than refuse or stall requests.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from understudy.storage.database import Store
from understudy.storage.engine import error_types
from understudy.storage.rate_limits import lease_tokens

log = logging.getLogger("understudy.limits")

MAX_LEASES = 10000  # clients with a lease kept before expired leases are forgotten
PRUNE_S = 60.0  # how often a lease also prunes the buckets that are full again


@dataclass
class _Lease:
    tokens: int
    until: float
    refused: bool = False


class LocalBuckets(Protocol):
    """The per-process buckets (``limits.TokenBuckets``): the rate, the size, a fallback."""

    rate: float
    capacity: float

    def take(self, client: str) -> float: ...


class SharedTokenBuckets:
    """Buckets that live in the database, spent through local leases; ``local`` (the rate and
    burst, and the count while the database is away) is the per-process kind."""

    def __init__(
        self,
        local: LocalBuckets,
        store: Store,
        lease_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = local
        self.rate, self.capacity = local.rate, local.capacity
        self.store, self.lease_s, self.wall = store, lease_s, clock
        self.want = max(1, min(int(self.capacity), math.floor(self.rate * lease_s)))
        self._leases: dict[str, _Lease] = {}
        self._pruned = clock()
        self.leases_taken = 0

    def take(self, client: str) -> float:
        now = self.wall()
        lease = self._leases.get(client)
        if lease is not None and now < lease.until:
            if lease.tokens > 0:
                lease.tokens -= 1
                return 0.0
            if lease.refused:  # the database said when the next token is there
                return lease.until - now
        prune = now - self._pruned >= PRUNE_S
        try:
            with self.store.write() as db:
                taken, wait = lease_tokens(
                    db,
                    client,
                    rate=self.rate,
                    capacity=self.capacity,
                    want=self.want,
                    now=now,
                    prune=prune,
                )
        except error_types() as exc:  # the database is away: count locally meanwhile
            log.warning("shared rate limit unavailable (%s); counting in this process", exc)
            return self.local.take(client)
        self.leases_taken += 1
        if prune:
            self._pruned = now
        if len(self._leases) >= MAX_LEASES:
            self._leases = {c: v for c, v in self._leases.items() if v.until > now}
        if not taken:
            self._leases[client] = _Lease(0, now + wait, refused=True)
            return wait
        self._leases[client] = _Lease(taken - 1, now + self.lease_s)
        return 0.0
