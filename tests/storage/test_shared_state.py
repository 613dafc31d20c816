"""What several processes share through the database, on either engine: one distill lock per
task however many workers race for it, a crashed holder's lock taken over, and the
distiller's commands and schedule reading ``storage.url``'s database."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading

import pytest

from tests.storage.test_request_log import record
from understudy.cli import main
from understudy.distiller.lock import RunInProgress, TaskLock
from understudy.distiller.schedule import DistillScheduler
from understudy.storage.database import Store, open_database
from understudy.storage.distill_queries import acquire_lock, get_lock, list_golden
from understudy.storage.engine import is_postgres
from understudy.storage.request_log import write_rows


def test_one_of_many_racing_workers_takes_the_lock(address):
    Store(address).migrate()
    start = threading.Barrier(8)
    taken: list[str] = []

    def race(n: int) -> None:
        db = open_database(address, migrate_schema=False, busy_timeout_ms=5000)
        try:
            start.wait()
            got, _ = acquire_lock(
                db,
                "intent",
                owner=f"worker-{n}",
                host="elsewhere",
                pid=n + 1,
                ttl_s=60,
                is_stale=lambda row: False,
            )
            if got:
                taken.append(f"worker-{n}")
        finally:
            db.conn.close()

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 1
    with Store(address).read() as db:
        assert get_lock(db, "intent")["owner"] == taken[0]


def test_a_second_worker_waits_and_a_dead_holder_is_replaced(address):
    with (
        TaskLock(address, "intent", ttl_s=60, heartbeat_s=0.05),
        pytest.raises(RunInProgress),
        TaskLock(address, "intent"),
    ):
        pass
    with Store(address).write() as db:  # a lock left by a process of this host that is gone
        acquire_lock(
            db,
            "intent",
            owner="gone",
            host=socket.gethostname(),
            pid=_dead_pid(),
            ttl_s=3600,
            is_stale=lambda row: False,
        )
    with TaskLock(address, "intent") as taker:
        assert taker.replaced is not None and taker.replaced["pid"] == _dead_pid()


def _dead_pid() -> int:
    return 2**22 + 7  # above pid_max's default: never a live process


def _seed(address) -> None:
    Store(address).migrate()
    row = {**record(1), "task": "intent"}
    with Store(address).write() as db:
        write_rows(db, "requests", [row])


def test_the_distillers_commands_and_schedule_use_storage_url(address, tmp_path, monkeypatch):
    _seed(address)
    url = address if is_postgres(address) else f"sqlite:///{address}"
    monkeypatch.setenv("UNDERSTUDY_STORAGE_URL", url)
    data = tmp_path / "data"  # the data directory has no database of its own
    args = ["--data-dir", str(data)]
    assert (
        main(["golden", "add", *args, "--task", "intent", "--input", "hi", "--expected", "x"]) == 0
    )
    assert main(["distill", "history", *args, "--task", "intent"]) == 0
    with Store(address).read() as db:
        assert [g["expected"] for g in list_golden(db, "intent")] == ["x"]
    assert not (data / "understudy.db").exists()
    scheduler = DistillScheduler(data, database=address)
    assert scheduler.tasks() == ["intent"]


HOLDER = """
import socket, sys, time
socket.gethostname = lambda: "worker-b"  # a worker on another host: its pid means nothing here
from understudy.distiller.lock import TaskLock
with TaskLock(sys.argv[1], "intent", ttl_s=3600, heartbeat_s=60):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_crashed_workers_lock_is_free_at_once_on_postgresql(postgres_url):
    """Its row says another host and an hour to expiry; the server ends its session lock when
    its connection drops, and that is enough."""
    Store(postgres_url).migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, postgres_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInProgress, match="worker-b"), TaskLock(postgres_url, "intent"):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with TaskLock(postgres_url, "intent") as taker:
            assert taker.replaced is not None and taker.replaced["host"] == "worker-b"
    finally:
        holder.kill()
        holder.wait()
