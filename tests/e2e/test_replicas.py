"""Two gateway replicas on one PostgreSQL database, as behind a load balancer: one monthly
budget enforced across both, and ``kill -9`` of one replica under load loses no request it
acknowledged longer than the commit interval before, while the other goes on serving."""

from __future__ import annotations

import threading
import time

import httpx
import openai

from tests.e2e.conftest import gateway_env
from tests.gateway_process import GatewayProcess

KEY = "gw-key-replicas"
COMMIT_INTERVAL_MS = 50
SCHEDULING_SLACK_S = 0.25  # the writer shares two busy cores with both gateways and the load


def _replicas(stub, tmp_path, url: str, config: str) -> tuple[GatewayProcess, GatewayProcess]:
    env = gateway_env(UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS=str(COMMIT_INTERVAL_MS))
    first = GatewayProcess(stub.base_url, tmp_path / "a", env=env, config=config, storage_url=url)
    second = GatewayProcess(stub.base_url, tmp_path / "b", env=env, config=config, storage_url=url)
    first.start()
    try:
        second.start()
    except BaseException:
        first.stop()
        raise
    return first, second


def test_one_monthly_budget_holds_across_replicas(stub, teacher, postgres_url, tmp_path):
    budget = 400
    config = f'api_keys = ["{KEY}"]\n[limits]\nmonthly_tokens = {budget}\nreserve_tokens = 1\n'
    a, b = _replicas(stub, tmp_path, postgres_url, config)
    try:
        clients = [openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0) for gw in (a, b)]
        used = [0, 0]
        refused_at: int | None = None
        for i in range(200):
            side = i % 2
            try:
                answer = clients[side].chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "Tell me a story."}]
                )
            except openai.RateLimitError:
                refused_at = side
                break
            used[side] += answer.usage.total_tokens
            time.sleep(0.15)  # a refresh of the other replica's usage is at most a second old
        assert refused_at is not None, "the budget was never enforced"
        assert max(used) < budget <= sum(used) + 60  # neither replica alone reached it
        for gw in (a, b):  # and both refuse the key once they have re-read the usage
            assert _refused_within(gw, 3.0), f"{gw.url} still answers the spent key"
    finally:
        a.stop()
        b.stop()


def _refused_within(gw: GatewayProcess, seconds: float) -> bool:
    """Whether the key is refused (429) within ``seconds``: a replica re-reads every process's
    usage at most a second apart, plus the commit interval of the one that logged it."""
    deadline = time.monotonic() + seconds
    while True:
        status = httpx.post(
            gw.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}]},
        ).status_code
        if status == 429:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _load(gw: GatewayProcess, acked: list[tuple[float, str]], stop: threading.Event) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}]}
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=gw.base_url, timeout=5, headers=headers) as client:
        while not stop.is_set():
            try:
                r = client.post("/chat/completions", json={**body, "stream": len(acked) % 2 == 1})
                if r.status_code == 200:
                    acked.append((time.monotonic(), r.headers["x-request-id"]))
            except httpx.HTTPError:
                if stop.is_set():
                    return
                time.sleep(0.01)


def test_kill_9_of_one_replica_loses_no_acknowledged_row(stub, teacher, postgres_url, tmp_path):
    a, b = _replicas(stub, tmp_path, postgres_url, f'api_keys = ["{KEY}"]\n')
    try:
        acked_a: list[tuple[float, str]] = []
        acked_b: list[tuple[float, str]] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(a, acked_a, stop)) for _ in range(6)]
        threads += [threading.Thread(target=_load, args=(b, acked_b, stop)) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                len(acked_a) < 100 or time.monotonic() - acked_a[0][0] < 2.0
            ):
                time.sleep(0.05)
            killed_at = time.monotonic()
            a.kill()
            served_after = len(acked_b)
            time.sleep(1.0)
            assert len(acked_b) > served_after, "the other replica stopped serving"
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert len(acked_a) >= 100, "the load did not get going"
        b.stop()  # the surviving replica flushes everything it acknowledged

        logged = [r["id"] for r in b.rows()]
        assert len(logged) == len(set(logged))
        horizon = killed_at - COMMIT_INTERVAL_MS / 1000 - SCHEDULING_SLACK_S
        must_have = {rid for at, rid in acked_a if at < horizon} | {rid for _, rid in acked_b}
        missing = must_have - set(logged)
        assert not missing, f"{len(missing)} of {len(must_have)} acknowledged requests were lost"
    finally:
        a.stop()
        b.stop()


def test_one_rate_limit_holds_across_replicas(stub, teacher, postgres_url, tmp_path):
    """A key's burst of 5 (6 a minute after it) is spent through either replica: 5 answers in
    all, not 5 from each."""
    config = (
        f'api_keys = ["{KEY}"]\n[limits]\nrequests_per_minute = 6\nburst = 5\nrate_lease_s = 1.0\n'
    )
    a, b = _replicas(stub, tmp_path, postgres_url, config)
    try:
        statuses = []
        for i in range(12):
            gw = (a, b)[i % 2]
            statuses.append(
                httpx.post(
                    gw.base_url + "/chat/completions",
                    headers={"authorization": f"Bearer {KEY}"},
                    json={"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}]},
                ).status_code
            )
        assert statuses.count(200) == 5 and statuses.count(429) == 7, statuses
    finally:
        a.stop()
        b.stop()
