"""What the gateway's limits share between processes on one database.

* Monthly budgets: usage per gateway key, from the rollups (exact across every process writing
  the log, at any log size), and a hold per request in flight (``budget_reservations``): a
  request is admitted and its hold written in one transaction under the key's lock, so every
  process sees every other's requests in flight. A hold counts until its request's row is
  logged (the row and its rollups commit together: from then on the rollups count it) or its
  lease ends; the process that owns it renews the lease while it lives. A hold is of tokens
  and of teacher USD (the request's worst case, for ``monthly_usd``). A process may also hold
  a slice of a key's remaining budget and admit requests from it without asking, writing their
  own holds in batches (:func:`flush_slice`).
* Failed key checks per client address (``auth_failures``), pruned as they are written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from understudy.storage.engine import Database, exclusive
from understudy.storage.reports import window
from understudy.storage.rollups import HOUR_S, ids_absent

_END_OF_TIME = float(2**31 * HOUR_S)
"""Beyond any hour logged (and the largest hour a 32-bit column holds)."""


def usage_since(db: Database, since: float) -> dict[str, tuple[int, float]]:
    """``{api_key_id: (total tokens, teacher USD)}`` of the requests logged since the start of
    the hour holding ``since`` (a month starts on the hour: exact)."""
    src, params = window("rollup_requests", since, _END_OF_TIME)
    rows = db.execute(
        f"select api_key_id, sum(total_tokens), sum(teacher_cost_usd) from {src}"
        " where api_key_id != '' group by api_key_id",
        params,
    ).fetchall()
    return {key: (int(tokens), float(usd)) for key, tokens, usd in rows}


def logged_ids(db: Database, ids: list[str]) -> set[str]:
    """Which of ``ids`` are logged (their usage is in the rollups: both commit together)."""
    return set(ids) - ids_absent(db.conn, ids)


def key_usage_since(db: Database, key: str, since: float) -> tuple[int, float]:
    """``(total tokens, teacher USD)`` of ``key``'s requests logged since the start of the hour
    holding ``since``."""
    src, params = window("rollup_requests", since, _END_OF_TIME)
    tokens, usd = db.execute(
        f"select sum(total_tokens), sum(teacher_cost_usd) from {src} where api_key_id = ?",
        [*params, key],
    ).fetchone()
    return int(tokens or 0), float(usd or 0.0)


@dataclass(frozen=True)
class Hold:
    """What one request holds of its key's month: tokens, and teacher USD."""

    id: str
    tokens: int
    usd: float = 0.0


@dataclass(frozen=True)
class Budget:
    """One key's month as a process found it when it asked to start a request."""

    tokens: int
    """Tokens of its logged requests."""
    usd: float
    """Teacher USD of its logged requests."""
    held: int
    """Tokens held by its requests in flight and processes' slices (not logged, not lapsed)."""
    admitted: bool
    """Whether the request was admitted (its hold written)."""
    held_usd: float = 0.0
    """Teacher USD held by its requests in flight and processes' slices."""
    slice_requests: int = 0
    """How many more requests like this one the process's new slice holds (0: none taken)."""


def hold_budget(
    db: Database,
    request_id: str,
    key: str,
    *,
    tokens: int,
    monthly_tokens: int,
    monthly_usd: float,
    since: float,
    owner: str,
    expires_at: float,
    now: float,
    usd: float = 0.0,
    used: list[Hold] | None = None,
    pending: list[Hold] | None = None,
    slice_id: str | None = None,
    slice_requests: int = 0,
) -> Budget:
    """Admit a request of ``key`` while its month's logged tokens plus those held are below
    ``monthly_tokens`` and its logged teacher USD plus the USD held below ``monthly_usd`` (0: no
    limit), holding ``tokens`` and ``usd`` for it until its row is logged or ``expires_at``; in
    one transaction under the key's lock, so racing processes see each other's holds.

    In the same transaction: ``pending`` (requests the process admitted from its slice) get
    their own holds and the slice ``slice_id`` is given back; ``used`` (answered requests whose
    rows are on their way to the log) hold what they used (:func:`settle_holds`). With
    ``slice_requests``, an admitted request also takes a new slice of up to that many more
    requests like it, at most half of what the month has left once it is held, for the process
    to admit from without asking (:func:`flush_slice`): slices and holds never exceed the
    budget, so only a request admitted here can cross the line."""
    src, params = window("rollup_requests", since, _END_OF_TIME)
    with exclusive(db, f"understudy-budget:{key}"):
        _write_holds(db, key, owner, expires_at, pending or [])
        if slice_id is not None:
            db.execute("delete from budget_reservations where id = ?", [slice_id])
        _settle(db, used or [])
        # One statement, one snapshot: a row logged meanwhile is in the sums or still held.
        spent, spent_usd, held, held_usd = db.execute(
            "select u.tokens, u.usd, h.held, h.usd from"
            " (select sum(total_tokens) as tokens, sum(teacher_cost_usd) as usd"
            f" from {src} where api_key_id = ?) as u,"
            " (select coalesce(sum(tokens), 0) as held, coalesce(sum(usd), 0) as usd"
            " from budget_reservations b"
            " where api_key_id = ? and expires_at > ?"
            " and not exists (select 1 from requests q where q.id = b.id)) as h",
            [*params, key, key, now],
        ).fetchone()
        budget = Budget(
            int(spent or 0), float(spent_usd or 0.0), int(held), False, float(held_usd or 0.0)
        )
        admitted = (not monthly_tokens or budget.tokens + budget.held < monthly_tokens) and (
            not monthly_usd or budget.usd + budget.held_usd < monthly_usd
        )
        if not admitted:
            return budget
        _write_holds(db, key, owner, expires_at, [Hold(request_id, tokens, usd)])
        more = _slice_size(budget, tokens, usd, monthly_tokens, monthly_usd, slice_requests)
        if more and slice_id is not None:
            _write_holds(db, key, owner, expires_at, [Hold(slice_id, more * tokens, more * usd)])
    return Budget(budget.tokens, budget.usd, budget.held, True, budget.held_usd, more)


def _slice_size(
    budget: Budget, tokens: int, usd: float, monthly_tokens: int, monthly_usd: float, want: int
) -> int:
    """How many requests like this one a new slice holds: up to ``want``, in at most half of
    what each limit has left once this request is held."""
    more = want
    if monthly_tokens:
        left = monthly_tokens - budget.tokens - budget.held - tokens
        more = min(more, left // (2 * tokens)) if tokens > 0 else 0
    if monthly_usd:
        left_usd = monthly_usd - budget.usd - budget.held_usd - usd
        more = min(more, math.floor(left_usd / (2 * usd))) if usd > 0 else 0
    return max(0, more)


def _write_holds(db: Database, key: str, owner: str, expires_at: float, holds: list[Hold]) -> None:
    if holds:
        db.conn.executemany(
            "insert into budget_reservations (id, api_key_id, tokens, usd, owner, expires_at)"
            " values (?, ?, ?, ?, ?, ?) on conflict (id) do update set"
            " tokens = excluded.tokens, usd = excluded.usd, expires_at = excluded.expires_at",
            [(h.id, key, h.tokens, h.usd, owner, expires_at) for h in holds],
        )


def _settle(db: Database, used: list[Hold]) -> None:
    if used:
        db.conn.executemany(
            "update budget_reservations set tokens = ?, usd = ? where id = ?",
            [(h.tokens, h.usd, h.id) for h in used],
        )


def settle_holds(db: Database, used: list[Hold]) -> None:
    """Hold what answered requests used instead of their estimates, until their rows are
    logged."""
    with db.conn:
        _settle(db, used)


def flush_slice(
    db: Database,
    key: str,
    owner: str,
    expires_at: float,
    *,
    slice_id: str,
    pending: list[Hold],
    left: Hold | None,
) -> None:
    """In one transaction: the requests ``pending`` that a process admitted from its slice of
    ``key``'s budget get holds of their own, and the slice holds only what is ``left`` of it
    (None: given back). Until then the slice held them: they are counted once throughout (or
    twice, for a moment, if a row is logged first: never less)."""
    with db.conn:
        _write_holds(db, key, owner, expires_at, pending)
        if left is None or (left.tokens <= 0 and left.usd <= 0):
            db.execute("delete from budget_reservations where id = ?", [slice_id])
        else:
            db.execute(
                "update budget_reservations set tokens = ?, usd = ? where id = ?",
                [left.tokens, left.usd, slice_id],
            )


def renew_holds(db: Database, owner: str, expires_at: float) -> None:
    """Extend the lease of every hold ``owner`` still has."""
    with db.conn:
        db.execute(
            "update budget_reservations set expires_at = ? where owner = ?", [expires_at, owner]
        )


def logged_holds(db: Database, owner: str) -> list[str]:
    """The ids of ``owner``'s holds whose request is logged (they count no more)."""
    rows = db.execute(
        "select r.id from budget_reservations r where r.owner = ?"
        " and exists (select 1 from requests q where q.id = r.id)",
        [owner],
    ).fetchall()
    return [r[0] for r in rows]


def drop_holds(db: Database, ids: list[str], *, lapsed_before: float) -> None:
    """Remove the holds ``ids`` and every hold whose lease ended before ``lapsed_before`` (its
    owner gone)."""
    with db.conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            db.execute(
                f"delete from budget_reservations where id in ({', '.join('?' * len(chunk))})",
                chunk,
            )
        db.execute("delete from budget_reservations where expires_at < ?", [lapsed_before])


def add_auth_failure(db: Database, address: str, now: float, window_s: float) -> list[float]:
    """Count a failed key check of ``address`` at ``now``; the times of its failures within
    ``window_s`` before, oldest first (older ones are removed)."""
    with exclusive(db, f"understudy-auth:{address}"):
        db.execute(
            "delete from auth_failures where address = ? and at <= ?", [address, now - window_s]
        )
        db.execute("insert into auth_failures (address, at) values (?, ?)", [address, now])
        rows = db.execute(
            "select at from auth_failures where address = ? order by at", [address]
        ).fetchall()
    return [float(r[0]) for r in rows]


def auth_lockouts(db: Database, since: float, failures: int) -> dict[str, float]:
    """``{address: time of its oldest failure}`` of every address with at least ``failures``
    failed key checks since ``since``."""
    rows = db.execute(
        "select address, min(at) from auth_failures where at > ?"
        " group by address having count(*) >= ?",
        [since, failures],
    ).fetchall()
    return {r[0]: float(r[1]) for r in rows}


def prune_auth_failures(db: Database, before: float) -> None:
    """Forget failed key checks older than ``before`` (every address's)."""
    with db.conn:
        db.execute("delete from auth_failures where at < ?", [before])
