"""Every storage test runs on both engines: a SQLite file and a PostgreSQL database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from understudy.storage.database import Store
from understudy.storage.engine import Address


@pytest.fixture(params=["sqlite", "postgresql"])
def address(request: pytest.FixtureRequest, tmp_path: Path) -> Address:
    """Where the test's database is: a SQLite file, or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "u.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sql_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the connections a ``Store`` opens run from now on (SQLite's trace
    callback), until ``monkeypatch.undo()``."""
    statements: list[str] = []
    real_open = Store._open

    def traced(self: Store, **kwargs: Any) -> Any:
        db = real_open(self, **kwargs)
        db.conn.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(Store, "_open", traced)
    return statements
