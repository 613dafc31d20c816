"""Dashboard sessions live in the database: a session started by one gateway process is valid
in another on the same database (``serve --workers N``), and signing out in one ends it in
all. With sessions in memory, a browser signed in on one worker was refused by the other."""

from __future__ import annotations

from understudy.gateway.api import sessions
from understudy.gateway.api.sessions import Sessions
from understudy.storage.database import Store


def two_workers(tmp_path, clock=None):
    store = Store(tmp_path / "understudy.db")
    store.migrate()
    kwargs = {"clock": clock} if clock else {}
    return Sessions(store=store, **kwargs), Sessions(store=Store(store.path), **kwargs)


def test_a_session_started_in_one_process_holds_in_another(tmp_path):
    first, second = two_workers(tmp_path)
    token = first.start()
    assert second.valid(token) and first.valid(token)
    assert not second.valid("not-a-token") and not second.valid(None)


def test_signing_out_in_one_process_ends_the_session_everywhere(tmp_path):
    first, second = two_workers(tmp_path)
    token = first.start()
    second.end(token)
    assert not first.valid(token) and not second.valid(token)


def test_sessions_expire_and_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 5)
    now = [1000.0]
    first, second = two_workers(tmp_path, clock=lambda: now[0])
    token = first.start()
    now[0] += first.ttl_s + 1
    assert not second.valid(token)
    tokens = [first.start() for _ in range(sessions.MAX_SESSIONS + 1)]
    assert not second.valid(tokens[0]) and second.valid(tokens[-1])
    with Store(tmp_path / "understudy.db").read() as db:
        kept = db.execute("select count(*) from dashboard_sessions").fetchone()[0]
    assert kept == sessions.MAX_SESSIONS


def test_the_database_keeps_the_hash_never_the_token(tmp_path):
    first, _ = two_workers(tmp_path)
    token = first.start()
    with Store(tmp_path / "understudy.db").read() as db:
        stored = [r[0] for r in db.execute("select digest from dashboard_sessions").fetchall()]
    assert stored and token not in stored
