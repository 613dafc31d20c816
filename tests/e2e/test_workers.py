"""``understudy serve --workers 2``: two processes share the port, every request through
either is logged in the one database, a stop flushes both, a worker that dies is replaced."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import psutil
import pytest

from tests.e2e.conftest import TEACHER_MODEL, gateway_env
from tests.gateway_process import GatewayProcess
from tests.teacher_stub import StubTeacher

CLIENTS = 16
REQUESTS_EACH = 5


@pytest.fixture
def workers(teacher: StubTeacher, tmp_path) -> GatewayProcess:
    gw = GatewayProcess(
        teacher.base_url, tmp_path / "data", env=gateway_env(), args=["--workers", "2"]
    )
    with gw:
        yield gw


def worker_pids(gw: GatewayProcess) -> list[int]:
    assert gw.proc is not None
    return [child.pid for child in psutil.Process(gw.proc.pid).children()]


def serving_pids(gw: GatewayProcess) -> set[int]:
    """The workers holding a client connection to the gateway's port now."""
    found = set()
    for pid in worker_pids(gw):
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == gw.port and conn.status == "ESTABLISHED":
                found.add(pid)
    return found


def ask(gw: GatewayProcess, client_no: int) -> tuple[list[str], set[int]]:
    """One client on its own connection: ``REQUESTS_EACH`` chat requests; their ids, and the
    workers holding connections after its first answer."""
    with httpx.Client() as http:
        client = openai.OpenAI(base_url=gw.base_url, api_key="sk-any", http_client=http)
        ids, seen = [], set()
        for i in range(REQUESTS_EACH):
            raw = client.chat.completions.with_raw_response.create(
                model=TEACHER_MODEL,
                messages=[{"role": "user", "content": f"What is 2+2? ({client_no}.{i})"}],
            )
            assert raw.parse().choices[0].message.content.startswith("ok: What is 2+2?")
            ids.append(raw.headers["x-request-id"])
            if i == 0:
                time.sleep(0.2)  # every client holds its connection open at once
                seen |= serving_pids(gw)
        return ids, seen


def test_two_workers_share_the_port_and_log_every_request(workers):
    assert len(worker_pids(workers)) == 2
    ids: list[str] = []
    serving: set[int] = set()
    rounds = 0
    # The kernel hands each new connection to whichever worker accepts first: on a busy
    # machine one worker may take a whole round, so rounds go on (at most 5) until both have.
    while serving != set(worker_pids(workers)) and rounds < 5:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda n: ask(workers, n), range(CLIENTS)))
        ids += [rid for got, _ in results for rid in got]
        serving |= set().union(*(seen for _, seen in results))
        rounds += 1
    assert serving == set(worker_pids(workers))  # both workers answered clients
    assert len(set(ids)) == rounds * CLIENTS * REQUESTS_EACH
    assert workers.stop() == 0  # both drain and flush their write-behind log
    rows = workers.rows()
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(r["status"] == "ok" and r["response_json"] for r in rows)


def test_a_worker_that_dies_is_replaced(workers):
    first, second = worker_pids(workers)
    psutil.Process(first).send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = worker_pids(workers)
        if len(now) == 2 and first not in now:
            break
        time.sleep(0.1)
    replaced = worker_pids(workers)
    assert len(replaced) == 2 and first not in replaced and second in replaced
    for n in range(6):  # new connections: the replacement accepts its share, nothing fails
        assert ask(workers, n)[0]
    assert workers.stop() == 0


def test_workers_end_when_the_supervisor_is_killed(workers):
    pids = worker_pids(workers)
    workers.kill()  # SIGKILL: the supervisor cannot pass anything on
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)  # no orphan keeps serving the port


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
