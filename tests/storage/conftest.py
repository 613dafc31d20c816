"""Every storage test runs on both engines: a SQLite file and a PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest

from understudy.storage.engine import Address


@pytest.fixture(params=["sqlite", "postgresql"])
def address(request: pytest.FixtureRequest, tmp_path: Path) -> Address:
    """Where the test's database is: a SQLite file, or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "u.db"
    return str(request.getfixturevalue("postgres_url"))
