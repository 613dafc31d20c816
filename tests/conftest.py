"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer, adopt_environment, unavailable_reason


def pytest_configure(config: pytest.Config) -> None:
    adopt_environment()  # before any test reads the settings from the environment


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny Llama (``gateway.student.tiny``) with its tokenizer, saved once."""
    from understudy.student.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "base")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (``tests/postgres_server.py``): skipped with the
    reason where none can be had, except under CI, which always has one."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {reason}")
        pytest.skip(f"PostgreSQL variant skipped: {reason}")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """An empty database of its own on the session's server, dropped after the test."""
    from understudy.storage.engine_postgres import close_pools

    url = postgres_server.fresh_database()
    yield url
    close_pools(url)
    postgres_server.drop_database(url)
