"""Dashboard sessions in the database, so that every gateway process (``serve --workers N``,
replicas on one database) knows a session another one started or ended. Rows hold the token's
hash, never the token."""

from __future__ import annotations

from understudy.storage.engine import Database


def add_session(db: Database, digest: str, expires_at: float, *, now: float, keep: int) -> None:
    """Store a session; expired ones are removed, and the oldest beyond ``keep`` end."""
    with db.conn:
        db.execute("delete from dashboard_sessions where expires_at <= ?", [now])
        count = int(db.execute("select count(*) from dashboard_sessions").fetchone()[0])
        if count >= keep:
            db.execute(
                "delete from dashboard_sessions where digest in (select digest from"
                " dashboard_sessions order by expires_at limit ?)",
                [count - keep + 1],
            )
        db.execute(
            "insert into dashboard_sessions (digest, expires_at) values (?, ?)"
            " on conflict (digest) do update set expires_at = excluded.expires_at",
            [digest, expires_at],
        )


def session_expiry(db: Database, digest: str) -> float | None:
    """When the session ends (None: no such session)."""
    row = db.execute(
        "select expires_at from dashboard_sessions where digest = ?", [digest]
    ).fetchone()
    return None if row is None else float(row[0])


def end_session(db: Database, digest: str) -> None:
    with db.conn:
        db.execute("delete from dashboard_sessions where digest = ?", [digest])
