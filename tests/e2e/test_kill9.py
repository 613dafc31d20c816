"""``kill -9`` of the gateway under load: the database opens cleanly after a restart and holds
every request acknowledged longer before the kill than the writer's lag: the commit interval and
the write in flight, as the gateway measures it (``understudy_log_commit_lag_max_seconds``)."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import openai

from tests.e2e.conftest import gateway_env
from tests.e2e.scraped import scrape, value
from tests.gateway_process import GatewayProcess

COMMIT_INTERVAL_MS = 50
# The write in flight at the kill may take longer than any measured before it.
SCHEDULING_SLACK_S = 0.25
# A writer further behind than this under the test's load is broken, not slow.
MOST_LAG_S = 2.0


def load(
    gw: GatewayProcess,
    acked: list[tuple[float, str]],
    stop: threading.Event,
    headers: dict[str, str] | None = None,
) -> None:
    """Chat requests (every other one streamed) until ``stop``; each answered one's arrival
    time and id into ``acked``."""
    body = {"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}]}
    with httpx.Client(base_url=gw.base_url, timeout=5, headers=headers) as client:
        while not stop.is_set():
            try:
                stream = bool(len(acked) % 2)
                r = client.post("/chat/completions", json={**body, "stream": stream})
                if r.status_code == 200:
                    acked.append((time.monotonic(), r.headers["x-request-id"]))
            except httpx.HTTPError:
                if stop.is_set():
                    return
                time.sleep(0.01)


def commit_lag(gw: GatewayProcess) -> float:
    """The gateway's measured writer lag: the longest a row waited from submit to commit."""
    lag = value(scrape(gw)[1], "understudy_log_commit_lag_max_seconds")
    assert lag is not None, "the gateway does not export its writer lag"
    return lag


def test_kill_9_under_load_loses_nothing_older_than_the_commit_interval(stub, teacher, tmp_path):
    env = gateway_env(UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS=str(COMMIT_INTERVAL_MS))
    gw = GatewayProcess(stub.base_url, tmp_path / "data", env=env).start()
    acked: list[tuple[float, str]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(gw, acked, stop)) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            len(acked) < 200 or time.monotonic() - acked[0][0] < 2.0
        ):
            time.sleep(0.05)
        lag = commit_lag(gw)
        killed_at = time.monotonic()
        gw.kill()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert len(acked) >= 200, "the load did not get going"

    if gw.storage_url is None:  # the SQLite file opens cleanly, not only PostgreSQL's
        conn = sqlite3.connect(gw.db_path)
        try:
            assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    logged = [r["id"] for r in gw.rows()]
    assert len(logged) == len(set(logged))
    assert lag < MOST_LAG_S, f"the writer was {lag:.2f} s behind"
    horizon = killed_at - max(COMMIT_INTERVAL_MS / 1000, lag) - SCHEDULING_SLACK_S
    must_have = {rid for at, rid in acked if at < horizon}
    assert len(must_have) >= 100
    missing = must_have - set(logged)
    assert not missing, (
        f"{len(missing)} of {len(must_have)} requests acknowledged before the writer's lag "
        f"({lag:.3f} s measured) were lost"
    )

    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as restarted:
        c = openai.OpenAI(base_url=restarted.base_url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "What is 2+2?"}]
        )
        assert restarted.row(raw.headers["x-request-id"])["status"] == "ok"
        assert httpx.get(restarted.url + "/ready").json()["database"]["ok"] is True
