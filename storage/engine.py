"""The database engines behind ``Store``: where a database is (a SQLite file or a PostgreSQL
URL), the part of sqlite-utils' ``Database`` every storage function uses (:class:`Database`),
and what their errors mean.

SQLite is ``sqlite_utils.Database`` itself; PostgreSQL is
:class:`~understudy.storage.engine_postgres.PgDatabase`, which presents the same methods and
takes the same SQL (``?`` placeholders, SQLite's DDL in migrations), so ``storage/`` has one
copy of every query. SQL written here must run on both: ``INSERT ... ON CONFLICT``, no
``strftime``/``julianday``/``json_extract``, no ``rowid``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

Address = str | Path
"""Where a database is: a SQLite file path, or a ``postgresql://`` URL."""


def is_postgres(address: Address) -> bool:
    """Whether ``address`` names a PostgreSQL database."""
    return isinstance(address, str) and address.startswith(POSTGRES_SCHEMES)


def describe(address: Address) -> str:
    """``address`` fit to print: a PostgreSQL URL without its password."""
    if not is_postgres(address):
        return str(address)
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(address))
    if parts.password is None:
        return str(address)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...


class Connection(Protocol):
    """A connection whose ``with`` block is a transaction (committed, or rolled back when the
    block raises), as ``sqlite3.Connection``'s."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...

    @property
    def in_transaction(self) -> bool: ...


class Database(Protocol):
    """What storage functions use of a database: ``sqlite_utils.Database`` or ``PgDatabase``."""

    @property
    def conn(self) -> Any: ...

    def execute(self, sql: str, parameters: Any = None) -> Any: ...

    def query(self, sql: str, params: Any = None) -> Iterator[dict[str, Any]]: ...

    def executescript(self, sql: str) -> Any: ...

    def table_names(self) -> list[str]: ...

    def close(self) -> None: ...


def dialect(db: Database) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return str(getattr(db, "dialect", "sqlite"))


def error_types() -> tuple[type[BaseException], ...]:
    """The exceptions a database operation raises when the database refuses it (any engine)."""
    kinds: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:
        pass
    else:
        kinds.append(psycopg.Error)
    return tuple(kinds)


_FILE_PROBLEMS = ("locked", "busy", "full", "readonly", "read-only", "disk i/o", "unable to open")
"""Words of an SQLite error about the file rather than the row."""
_PG_UNAVAILABLE = ("08", "53", "57", "58", "40", "55P03", "25006")
"""SQLSTATE classes (and codes) of a PostgreSQL server that cannot take the write now:
connection lost, out of resources, shutting down, system error, serialization or deadlock,
lock not available, read-only."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be written now (locked, full, unreachable),
    rather than that a statement or its values are wrong: work is kept and retried."""
    if isinstance(exc, sqlite3.OperationalError):
        return any(word in str(exc).lower() for word in _FILE_PROBLEMS)
    try:
        import psycopg
    except ImportError:
        return False
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.Error) and state.startswith(_PG_UNAVAILABLE)


@contextmanager
def exclusive(db: Database, name: str) -> Iterator[None]:
    """A transaction no other writer of ``name`` runs beside: SQLite's ``begin immediate``
    (the whole file), a PostgreSQL transaction-scoped advisory lock on ``name``."""
    conn = db.conn
    if dialect(db) == "postgresql":
        conn.execute("select pg_advisory_xact_lock(hashtext(?))", [name])
    else:
        conn.execute("begin immediate")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    conn.commit()


def outside_transaction(db: Database, sql: str) -> None:
    """Run a statement no transaction may hold (``vacuum``)."""
    if dialect(db) == "postgresql":
        db.conn.commit()
        raw = db.conn.raw
        raw.autocommit = True
        try:
            raw.execute(sql)
        finally:
            raw.autocommit = False
    else:
        db.execute(sql)
