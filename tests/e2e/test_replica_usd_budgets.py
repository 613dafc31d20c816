"""One monthly USD budget across two gateway processes on one database (a SQLite file, and
PostgreSQL): requests in flight hold their worst-case teacher cost, so many concurrent clients
through both never spend past the budget by more than the one request that crossed the line,
and ``kill -9`` of a process with requests in flight holds their USD only until their lease
ends."""

from __future__ import annotations

import pytest

from tests.e2e.test_replica_budgets import (
    KEY,
    LEASE_S,
    STORY_TOKENS,
    _two,
    holds_lapse_after_kill_9,
    spend_until_refused,
)
from tests.e2e.test_replica_budgets import database as database  # the engines, as a fixture

PRICE = 1000.0  # USD per 1M tokens, input and output: the stand-in's answer costs 0.026 USD
STORY_USD = STORY_TOKENS * PRICE / 1_000_000


def _config(budget_usd: float, reserve: int) -> str:
    return (
        f'api_keys = ["{KEY}"]\n[limits]\nmonthly_usd = {budget_usd}\n'
        f"reserve_tokens = {reserve}\nbudget_lease_s = {LEASE_S}\n"
        f'[costs]\nprices = {{ "gpt-4o-mini" = "{PRICE:g}/{PRICE:g}" }}\n'
    )


def test_concurrent_requests_through_two_processes_keep_one_usd_budget(
    stub, teacher, database, tmp_path
):
    budget = 0.3  # 11.5 answers
    # Each request holds its body (about 20 tokens) and 16 for the answer at the dearest
    # prices (the table's: 1000/1000): at least the 26 tokens it costs.
    a, b = _two(stub, tmp_path, database, _config(budget, reserve=16))
    teacher.control(delay_ms=400)  # requests stay in flight together
    try:
        answered, refused = spend_until_refused([a, b], clients=12)
        assert refused == 24 and set(answered) == {STORY_TOKENS}
        logged = a.wait_rows("api_key_id is not null", count=len(answered))
        spent = sum(r["teacher_cost_usd"] for r in logged)
        assert spent == pytest.approx(len(answered) * STORY_USD)
        # below the budget plus the one request that crossed the line, however many were in
        # flight in either process (each of 24 clients always had one)
        assert spent < budget + STORY_USD, (spent, len(answered))
        assert spent > budget - 3 * STORY_USD, "refused well before the budget was spent"
    finally:
        a.stop()
        b.stop()


def test_kill_9_with_requests_in_flight_holds_their_usd_only_until_the_lease_ends(
    stub, teacher, database, tmp_path
):
    # Each request holds its body and 64 tokens for the answer at 1000 USD per 1M: about
    # 0.084 USD; three in flight hold the budget.
    a, b = _two(stub, tmp_path, database, _config(0.2, reserve=64))
    holds_lapse_after_kill_9(teacher, a, b, database)
