"""Fixtures for end-to-end tests: a stand-in teacher and the real gateway process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway_process import GatewayProcess
from tests.teacher_stub import StubTeacher

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
