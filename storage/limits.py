"""What the gateway's limits share between processes on one database.

* Monthly budgets: usage per gateway key, from the rollups (exact across every process writing
  the log, at any log size), and a hold per request in flight (``budget_reservations``): a
  request is admitted and its hold written in one transaction under the key's lock, so every
  process sees every other's requests in flight. A hold counts until its request's row is
  logged (the row and its rollups commit together: from then on the rollups count it) or its
  lease ends; the process that owns it renews the lease while it lives.
* Failed key checks per client address (``auth_failures``), pruned as they are written.
"""

from __future__ import annotations

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
class Budget:
    """One key's month as a process found it when it asked to start a request."""

    tokens: int
    """Tokens of its logged requests."""
    usd: float
    """Teacher USD of its logged requests."""
    held: int
    """Tokens held by its requests in flight (not logged yet, leases not ended)."""
    admitted: bool
    """Whether the request was admitted (its hold written)."""


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
    used: list[tuple[str, int]] | None = None,
) -> Budget:
    """Admit a request of ``key`` while its month's logged tokens plus those held by its
    requests in flight are below ``monthly_tokens`` and its logged USD below ``monthly_usd``
    (0: no limit), holding ``tokens`` for it until its row is logged or ``expires_at``; in one
    transaction under the key's lock, so racing processes see each other's holds. ``used``:
    ``(request id, tokens)`` of answered requests whose rows are on their way to the log: their
    holds become what they used (:func:`settle_holds`), in the same transaction."""
    src, params = window("rollup_requests", since, _END_OF_TIME)
    with exclusive(db, f"understudy-budget:{key}"):
        _settle(db, used or [])
        # One statement, one snapshot: a row logged meanwhile is in the sums or still held.
        spent, usd, held = db.execute(
            "select u.tokens, u.usd, h.held from"
            " (select sum(total_tokens) as tokens, sum(teacher_cost_usd) as usd"
            f" from {src} where api_key_id = ?) as u,"
            " (select coalesce(sum(tokens), 0) as held from budget_reservations b"
            " where api_key_id = ? and expires_at > ?"
            " and not exists (select 1 from requests q where q.id = b.id)) as h",
            [*params, key, key, now],
        ).fetchone()
        spent, usd, held = int(spent or 0), float(usd or 0.0), int(held)
        admitted = (not monthly_tokens or spent + held < monthly_tokens) and (
            not monthly_usd or usd < monthly_usd
        )
        if admitted and tokens > 0:
            db.execute(
                "insert into budget_reservations (id, api_key_id, tokens, owner, expires_at)"
                " values (?, ?, ?, ?, ?) on conflict (id) do update set"
                " tokens = excluded.tokens, expires_at = excluded.expires_at",
                [request_id, key, tokens, owner, expires_at],
            )
    return Budget(spent, usd, held, admitted)


def _settle(db: Database, used: list[tuple[str, int]]) -> None:
    if used:
        db.conn.executemany(
            "update budget_reservations set tokens = ? where id = ?",
            [(tokens, rid) for rid, tokens in used],
        )


def settle_holds(db: Database, used: list[tuple[str, int]]) -> None:
    """Hold what answered requests used (``(request id, tokens)``) instead of their estimates,
    until their rows are logged."""
    with db.conn:
        _settle(db, used)


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
