import sqlite3
import threading

import pytest

from understudy.storage.database import Store
from understudy.storage.migrations import applied


def test_migrate_creates_the_schema_and_read_sees_it(tmp_path):
    store = Store(tmp_path / "sub" / "u.db")
    assert not store.exists()
    assert "0001_initial" in store.migrate()
    assert store.exists()
    assert store.migrate() == []
    with store.read() as db:
        assert "requests" in db.table_names()
        assert "0001_initial" in applied(db)


def test_read_and_write_do_not_migrate(tmp_path):
    store = Store(tmp_path / "u.db")
    with store.write() as db:
        assert db.table_names() == []
    with store.read() as db:
        assert db.table_names() == []


def test_write_commits_and_closes(tmp_path):
    store = Store(tmp_path / "u.db", busy_timeout_ms=300)
    with store.write() as db:
        db.execute("create table t (x integer)")
        db.execute("insert into t values (1)")
        conn = db.conn
    with pytest.raises(sqlite3.ProgrammingError):  # closed when the block ended
        conn.execute("select 1")
    with store.read() as db:
        assert db.execute("select x from t").fetchall() == [(1,)]
        assert db.execute("pragma busy_timeout").fetchone() == (300,)


def test_read_refuses_writes(tmp_path):
    store = Store(tmp_path / "u.db")
    store.migrate()
    with pytest.raises(sqlite3.OperationalError), store.read() as db:
        db.execute("delete from requests")


def test_write_rolls_back_when_the_block_raises(tmp_path):
    store = Store(tmp_path / "u.db")
    with store.write() as db:
        db.execute("create table t (x integer)")
    with pytest.raises(RuntimeError), store.write() as db:
        db.conn.execute("insert into t values (1)")  # opens a transaction left to the block
        raise RuntimeError("boom")
    with store.read() as db:
        assert db.execute("select count(*) from t").fetchone() == (0,)


def test_each_thread_opens_its_own_connection(tmp_path):
    store = Store(tmp_path / "u.db")
    with store.write() as db:
        db.execute("create table t (x integer)")

    def add(n):
        with store.write() as db:
            db.execute("insert into t values (?)", [n])

    threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.read() as db:
        assert sorted(r[0] for r in db.execute("select x from t").fetchall()) == [0, 1, 2, 3]
