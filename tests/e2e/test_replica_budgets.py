"""One monthly token budget across two gateway processes on one database (a SQLite file, and
PostgreSQL): many concurrent requests through both never spend past the budget by more than the
one request that crossed the line, and ``kill -9`` of a process with requests in flight holds
their tokens only until their lease ends."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import GatewayProcess
from understudy.storage.database import open_database

KEY = "gw-key-budgets"
AUTH = {"authorization": f"Bearer {KEY}"}
STORY = {"model": "m", "messages": [{"role": "user", "content": "Tell me a story."}]}
STORY_TOKENS = 26  # the stand-in's usage for STORY: 11 prompt + 15 completion
LEASE_S = 3.0


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    """The replicas' ``storage.url``: None for one SQLite file in a data directory both use."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))


def _two(stub, tmp_path, url: str | None, config: str) -> tuple[GatewayProcess, GatewayProcess]:
    env = gateway_env(UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS="50")
    data = tmp_path / "data"  # on SQLite both processes log into one file
    a = GatewayProcess(stub.base_url, data, env=env, config=config, storage_url=url)
    b = GatewayProcess(stub.base_url, data, env=env, config=config, storage_url=url)
    a.start()
    try:
        b.start()
    except BaseException:
        a.stop()
        raise
    return a, b


def _config(budget: int, reserve: int) -> str:
    return (
        f'api_keys = ["{KEY}"]\n[limits]\nmonthly_tokens = {budget}\n'
        f"reserve_tokens = {reserve}\nbudget_lease_s = {LEASE_S}\n"
    )


def test_concurrent_requests_through_two_processes_keep_one_budget(
    stub, teacher, database, tmp_path
):
    budget = 300
    # Each request holds its body (about 20 tokens) and 8 for the answer: at least its 26.
    a, b = _two(stub, tmp_path, database, _config(budget, reserve=8))
    teacher.control(delay_ms=400)  # requests stay in flight together
    try:
        answered, refused = spend_until_refused([a, b], clients=12)
        assert refused == 24 and set(answered) == {STORY_TOKENS}
        spent = sum(answered)
        # below the budget plus the one request that crossed the line, however many were in
        # flight in either process (each of 24 clients always had one)
        assert spent < budget + STORY_TOKENS, (spent, len(answered))
        assert spent > budget - 3 * STORY_TOKENS, "refused well before the budget was spent"
        logged = a.wait_rows("api_key_id is not null", count=len(answered))
        assert sum(r["total_tokens"] for r in logged) == spent
    finally:
        a.stop()
        b.stop()


def test_kill_9_with_requests_in_flight_holds_their_tokens_only_until_the_lease_ends(
    stub, teacher, database, tmp_path
):
    budget = 200
    # Each request holds its body and 64 for the answer: three in flight hold the budget.
    a, b = _two(stub, tmp_path, database, _config(budget, reserve=64))
    holds_lapse_after_kill_9(teacher, a, b, database)


def holds_lapse_after_kill_9(
    teacher, a: GatewayProcess, b: GatewayProcess, url: str | None
) -> None:
    """Three requests in flight through ``a`` hold its key's budget (``b`` refuses it); ``a``
    is killed: ``b`` admits the key again once their lease has ended, not before."""
    teacher.control(delay_ms=20_000)  # they never finish: a is killed first
    try:
        in_flight = [
            threading.Thread(target=_post_ignoring_errors, args=(a,), daemon=True) for _ in range(3)
        ]
        for t in in_flight:
            t.start()
        deadline = time.monotonic() + 10
        while _holds(a, url) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status_within(b, 429, 0.0), "the other process did not see the holds"
        a.kill()
        killed_at = time.monotonic()
        teacher.control(delay_ms=0)
        assert _status_within(b, 200, LEASE_S + 5.0), "the killed process's holds never lapsed"
        waited = time.monotonic() - killed_at
        assert waited > LEASE_S - 1.5, f"held {waited:.1f}s only: the holds lapsed too early"
    finally:
        a.stop()
        b.stop()


def spend_until_refused(gateways: list[GatewayProcess], clients: int) -> tuple[list[int], int]:
    """``clients`` concurrent clients through each gateway, each asking for STORY until its key
    is refused: ``(each answer's total tokens, how many clients were refused)``."""
    answered: list[int] = []
    refused: list[int] = []

    def spend(gw: GatewayProcess) -> None:
        with httpx.Client(base_url=gw.base_url, headers=AUTH, timeout=30) as client:
            while True:
                r = client.post("/chat/completions", json=STORY)
                if r.status_code == 429:
                    refused.append(1)
                    return
                assert r.status_code == 200, r.text
                answered.append(r.json()["usage"]["total_tokens"])

    threads = [
        threading.Thread(target=spend, args=(gw,)) for gw in gateways for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answered, len(refused)


def _holds(gw: GatewayProcess, url: str | None) -> int:
    """How many requests in flight hold budget in the database."""
    db = open_database(url or gw.db_path, migrate_schema=False)
    try:
        return int(db.execute("select count(*) from budget_reservations").fetchone()[0])
    finally:
        db.conn.close()


def _post_ignoring_errors(gw: GatewayProcess) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the process is killed under it
        httpx.post(gw.base_url + "/chat/completions", headers=AUTH, json=STORY, timeout=60)


def _status_within(gw: GatewayProcess, status: int, seconds: float) -> bool:
    """Whether a request of the key gets ``status`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        got = httpx.post(gw.base_url + "/chat/completions", headers=AUTH, json=STORY, timeout=30)
        if got.status_code == status:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
