"""Rate-limit buckets shared by every gateway process on the database: a process leases a few
tokens of a client's bucket at a time (``limits.rate_lease_s``) and spends them locally, so
the database is asked once per lease, not once per request. A bucket nobody leased from for as
long as it takes to fill is full, as a bucket never seen is: such rows are pruned as leases are
written."""

from __future__ import annotations

import math

from understudy.storage.engine import Database, exclusive


def lease_tokens(
    db: Database,
    client: str,
    *,
    rate: float,
    capacity: float,
    want: int,
    now: float,
    prune: bool = False,
) -> tuple[int, float]:
    """Take up to ``want`` whole tokens from ``client``'s bucket (``rate`` tokens a second, at
    most ``capacity``; a new bucket is full). ``(tokens taken, seconds until one is there)``:
    the wait is 0.0 when any were taken. With ``prune``, also remove every bucket full again
    (untouched for ``capacity / rate`` seconds)."""
    with exclusive(db, f"understudy-rate:{client}"):
        if prune:
            db.execute("delete from rate_buckets where at < ?", [now - capacity / rate])
        row = db.execute(
            "select tokens, at from rate_buckets where client = ?", [client]
        ).fetchone()
        tokens = capacity if row is None else min(capacity, row[0] + max(0.0, now - row[1]) * rate)
        taken = max(0, min(want, math.floor(tokens)))
        db.execute(
            "insert into rate_buckets (client, tokens, at) values (?, ?, ?)"
            " on conflict (client) do update set tokens = excluded.tokens, at = excluded.at",
            [client, tokens - taken, now],
        )
    return taken, 0.0 if taken else (1.0 - tokens) / rate
