"""Fixtures for end-to-end tests: a stand-in teacher and the real gateway process.

With ``--e2e-storage postgresql`` every gateway logs into a PostgreSQL database of its own
(``tests/gateway_process.py``), dropped when its test module ends; a test marked
``sqlite_only`` (it reads or breaks the SQLite file itself) is skipped, saying why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway_process import GatewayProcess, drop_databases, use_postgres
from tests.teacher_stub import StubTeacher

PINNED = {"postgres_server", "postgres_url"}
"""Fixtures of tests that make their own PostgreSQL database, whatever ``--e2e-storage`` says."""
ENGINES = {"sqlite", "postgresql"}
"""Parameters of a test that runs on each engine in turn, whatever ``--e2e-storage`` says."""


def _picks_its_engine(item: pytest.Item) -> bool:
    if PINNED & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and bool(ENGINES & set(map(str, callspec.params.values())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--e2e-storage postgresql``: skip, saying why, the tests that read or break the
    SQLite file itself, and those that pick their engine themselves (a PostgreSQL database of
    their own, or each engine in turn): the default run runs them as they are."""
    if config.getoption("e2e_storage") != "postgresql":
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "reads the SQLite file itself"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))
        elif _picks_its_engine(item):
            reason = "picks its own engine and database: runs as it is in the default run"
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def gateway_storage(request: pytest.FixtureRequest) -> Iterator[str]:
    """The engine of this run's gateways (``--e2e-storage``)."""
    engine = str(request.config.getoption("e2e_storage"))
    if engine == "postgresql":
        use_postgres(request.getfixturevalue("postgres_server"))
    try:
        yield engine
    finally:
        use_postgres(None)


@pytest.fixture(scope="module", autouse=True)
def gateway_databases(gateway_storage: str) -> Iterator[None]:
    """Drop the module's gateways' PostgreSQL databases once its gateways have stopped."""
    yield
    drop_databases()


TEACHER_KEY = "sk-teacher-SECRET-7f3a9c"
TEACHER_MODEL = "gpt-4o-mini-2024-07-18"

TABLE = {
    "What is 2+2?": "4",
    "Name a colour.": "blue",
    "Tell me a story.": "Once upon a time there was a small model that learned from a big one.",
    "Weather in Paris?": {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
    "Give me JSON.": '{"intent": "card_arrival", "confidence": 0.9}',
    "Say hello:": " Hello there, friend.",
}


@pytest.fixture(scope="session")
def stub() -> Iterator[StubTeacher]:
    teacher = StubTeacher(table=TABLE, model=TEACHER_MODEL)
    teacher.start()
    try:
        yield teacher
    finally:
        teacher.stop()


@pytest.fixture
def teacher(stub: StubTeacher) -> StubTeacher:
    stub.control(reset=True)
    stub.requests.clear()
    return stub


def gateway_env(**extra: str) -> dict[str, str]:
    env = {
        "UNDERSTUDY_TEACHER_API_KEY": TEACHER_KEY,
        "UNDERSTUDY_TEACHER_BACKOFF_S": "0.01",
        "UNDERSTUDY_TEACHER_TIMEOUT_S": "3",
        "UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS": "20",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def gateway(
    stub: StubTeacher, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One open gateway (no gateway keys) shared by a test module."""
    data = tmp_path_factory.mktemp("gw") / "data"
    config = '[routes]\n"support-bot" = "support"\n'
    with GatewayProcess(stub.base_url, data, env=gateway_env(), config=config) as gw:
        yield gw
