"""Limits across two gateway processes on one database (a SQLite file, and PostgreSQL): an
address guessing keys through both gets ``failed_auth_per_minute`` wrong answers in all, not
that many from each, and is then throttled by both, right key or not; a key's rate limit is
shared by default on PostgreSQL (replicas), counted per process on SQLite unless
``limits.rate_lease_s`` is set."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.test_replica_budgets import KEY, STORY, _two


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    """The processes' ``storage.url``: None for one SQLite file in a data directory both use."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))


def test_an_address_guessing_keys_through_two_processes_is_throttled_once(
    stub, teacher, database, tmp_path
):
    config = f'api_keys = ["{KEY}"]\n[limits]\nfailed_auth_per_minute = 4\n'
    a, b = _two(stub, tmp_path, database, config)
    try:
        statuses = []
        for i in range(10):
            gw = (a, b)[i % 2]
            r = httpx.post(
                gw.base_url + "/chat/completions",
                headers={"authorization": f"Bearer sk-guess-{i}"},
                json=STORY,
            )
            statuses.append(r.status_code)
        # per process, each would have answered 4 guesses: 8 in all
        assert statuses[:4] == [401] * 4 and set(statuses[4:]) == {429}, statuses
        for gw in (a, b):  # the right key is refused too while the address is throttled
            r = httpx.post(
                gw.base_url + "/chat/completions",
                headers={"authorization": f"Bearer {KEY}"},
                json=STORY,
            )
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    finally:
        a.stop()
        b.stop()


def test_the_rate_limit_is_shared_by_default_on_postgresql(stub, teacher, database, tmp_path):
    config = f'api_keys = ["{KEY}"]\n[limits]\nrequests_per_minute = 6\nburst = 3\n'
    a, b = _two(stub, tmp_path, database, config)
    try:
        statuses = [
            httpx.post(
                (a, b)[i % 2].base_url + "/chat/completions",
                headers={"authorization": f"Bearer {KEY}"},
                json=STORY,
            ).status_code
            for i in range(10)
        ]
        # PostgreSQL: one burst of 3 through both; SQLite: each process its own burst of 3
        assert statuses.count(200) == (6 if database is None else 3), statuses
    finally:
        a.stop()
        b.stop()
