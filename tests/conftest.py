"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.postgres_server import (
    ENV_URL,
    PostgresServer,
    adopt_environment,
    given_url,
    unavailable_reason,
)
from understudy.student.threads import thread_environment


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e-storage",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the database of every gateway the end-to-end tests start: its data directory's "
        "SQLite file (default) or a PostgreSQL database of its own (tests/postgres_server.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # One math thread in each test process and the processes it starts, unless the caller says
    # otherwise: the suite runs one process per core (``-n 2``), and a BLAS pool of one thread
    # per core in each of them fights the other for every core.
    # (OpenBLAS, numpy's and scipy's, reads OMP_NUM_THREADS when OPENBLAS_NUM_THREADS is unset.)
    for name, value in thread_environment(1).items():
        os.environ.setdefault(name, value)
    # Before any test reads the settings from the environment; a worker of ``pytest -n`` gets
    # the server from the process that started it (the environment has lost it by then).
    adopt_environment(getattr(config, "workerinput", {}).get(ENV_URL, ""))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: hand each worker the PostgreSQL server named for the run."""
    node.workerinput[ENV_URL] = given_url()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with a test that trains a model (``slow``) first, otherwise as collected: under
    ``-n`` the longest files start at once rather than end the run alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


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
