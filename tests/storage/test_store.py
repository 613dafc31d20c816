import threading

import pytest

from understudy.storage.database import Store
from understudy.storage.engine import error_types, is_postgres
from understudy.storage.migrations import applied


def test_migrate_creates_the_schema_and_read_sees_it(address, tmp_path):
    store = Store(address if is_postgres(address) else tmp_path / "sub" / "u.db")
    assert not store.exists()
    assert "0001_initial" in store.migrate()
    assert store.exists()
    assert store.migrate() == []
    with store.read() as db:
        assert "requests" in db.table_names()
        assert "0001_initial" in applied(db)


def test_read_and_write_do_not_migrate(address):
    store = Store(address)
    with store.write() as db:
        assert db.table_names() == []
    with store.read() as db:
        assert db.table_names() == []


def test_write_commits_and_closes(address):
    store = Store(address, busy_timeout_ms=300)
    with store.write() as db:
        db.execute("create table t (x integer)")
        db.execute("insert into t values (1)")
        conn = db.conn
    if not is_postgres(address):  # a pooled connection is given back, not closed
        with pytest.raises(error_types()):  # closed when the block ended
            conn.execute("select 1")
    with store.read() as db:
        assert db.execute("select x from t").fetchall() == [(1,)]
        if is_postgres(address):
            assert db.execute("show lock_timeout").fetchone() == ("300ms",)
        else:
            assert db.execute("pragma busy_timeout").fetchone() == (300,)


def test_read_refuses_writes(address):
    store = Store(address)
    store.migrate()
    with pytest.raises(error_types()), store.read() as db:
        db.execute("delete from requests")


def test_write_rolls_back_when_the_block_raises(address):
    store = Store(address)
    with store.write() as db:
        db.execute("create table t (x integer)")
    with pytest.raises(RuntimeError), store.write() as db:
        db.conn.execute("insert into t values (1)")  # opens a transaction left to the block
        raise RuntimeError("boom")
    with store.read() as db:
        assert db.execute("select count(*) from t").fetchone() == (0,)


def test_each_thread_opens_its_own_connection(address):
    store = Store(address)
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


def test_the_same_sql_runs_on_both_engines(address):
    """SQLite's idioms the storage code relies on: ``?`` and ``:name`` placeholders, a literal
    ``%`` in a string, ``[name]`` identifiers, counting with ``sum(condition)``, ``floor``,
    upserts, and ``numeric`` results as ``int`` or ``float``."""
    store = Store(address)
    store.migrate()
    with store.write() as db:
        db.execute(
            "insert into [events] (created_at, task, kind, detail_json) values (?, ?, ?, ?)",
            [1.5, "t", "deferred:x", "{}"],
        )
        db.execute(
            "insert into events (created_at, task, kind) values (:at, :task, 'shadow of %')",
            {"at": 7201.0, "task": "t"},
        )
        for _ in range(2):
            db.execute(
                "insert into heartbeat (id, at) values (1, ?)"
                " on conflict (id) do update set at = excluded.at",
                [3.0],
            )
    with store.read() as db:
        row = db.execute(
            "select sum(kind like 'deferred:%'), sum(kind = 'nope'), count(*),"
            " cast(floor(max(created_at) / 3600) as integer), sum(id), avg(id)"
            " from events where task = ?",
            ["t"],
        ).fetchone()
        assert tuple(row) == (1, 0, 2, 2, 3, 1.5)
        assert [type(v) for v in row] == [int, int, int, int, int, float]
        assert db.execute("select count(*), max(at) from heartbeat").fetchone() == (1, 3.0)
        rows = list(db.query("select kind from events where kind like ?", ["shadow of %"]))
        assert rows == [{"kind": "shadow of %"}]


def test_pooled_connections_the_server_ended_are_replaced(postgres_url):
    """After a PostgreSQL restart or failover the pool's idle connections are dead: the next
    read gets a live one, not an error."""
    import psycopg

    store = Store(postgres_url)
    store.migrate()
    with store.read() as db:
        assert db.execute("select count(*) from requests").fetchone() == (0,)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        )
    for _ in range(3):
        with store.read() as db:
            assert db.execute("select count(*) from requests").fetchone() == (0,)


def test_an_unreachable_postgresql_is_one_line_without_its_password(tmp_path):
    from understudy.storage.database import data_dir_problem

    problem = data_dir_problem(tmp_path, "postgresql://u:s3cret@127.0.0.1:1/db")
    assert problem is not None and problem.startswith("cannot write the database")
    assert "postgresql://u:***@127.0.0.1:1/db" in problem
    assert "s3cret" not in problem and "\n" not in problem


def test_storage_url_is_checked_when_settings_load(monkeypatch):
    import importlib.util

    from understudy.config_reader import ConfigError
    from understudy.settings import load_settings

    with pytest.raises(ConfigError, match="sqlite:/// or postgresql://"):
        load_settings(env={"UNDERSTUDY_STORAGE_URL": "mysql://h/db"})
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "psycopg_pool" else found(name),
    )
    with pytest.raises(ConfigError, match=r"understudy\[postgres\]"):
        load_settings(env={"UNDERSTUDY_STORAGE_URL": "postgresql://h/db"})
