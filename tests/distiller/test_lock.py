import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from understudy.distiller.lock import RunInProgress, TaskLock, recover_stale_runs
from understudy.storage.distill_queries import get_lock, get_run, insert_run

HOLD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from understudy.distiller.lock import TaskLock
    from understudy.storage.database import open_database
    from understudy.storage.distill_queries import insert_run
    path = Path(sys.argv[1])
    with TaskLock(path, "intent", ttl_s=300, heartbeat_s=0.1) as lock:
        db = open_database(path)
        insert_run(db, {"id": "run-1", "task": "intent", "started_at": time.time(),
                        "status": "running", "host": os.uname().nodename, "pid": os.getpid(),
                        "heartbeat_at": time.time()})
        lock.attach(db, "run-1")
        print("holding", flush=True)
        time.sleep(60)
    """
)


def hold_in_other_process(db_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_run_of_the_same_task_is_refused(tmp_path, db):
    path = tmp_path / "understudy.db"
    with TaskLock(path, "intent"):
        with pytest.raises(RunInProgress, match="already going"), TaskLock(path, "intent"):
            pass
        with TaskLock(path, "another-task"):
            pass  # other tasks are not blocked
    with TaskLock(path, "intent"):
        pass  # released on exit


def test_a_live_holder_in_another_process_keeps_the_lock(tmp_path, db):
    path = tmp_path / "understudy.db"
    proc = hold_in_other_process(path)
    try:
        with pytest.raises(RunInProgress) as caught, TaskLock(path, "intent"):
            pass
        assert caught.value.holder["pid"] == proc.pid
        assert recover_stale_runs(db) == []
        assert get_run(db, "run-1")["status"] == "running"
    finally:
        proc.kill()
        proc.wait()


def test_a_crashed_worker_leaves_a_stale_lock_that_the_next_run_takes(tmp_path, db):
    path = tmp_path / "understudy.db"
    proc = hold_in_other_process(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert recover_stale_runs(db) == ["run-1"]
    run = get_run(db, "run-1")
    assert run["status"] == "failed"
    assert run["reason"] == f"crashed: worker process {proc.pid} is no longer running"
    with TaskLock(path, "intent") as lock:
        assert lock.replaced["pid"] == proc.pid
        assert get_lock(db, "intent")["pid"] == os.getpid()


def test_a_lock_from_another_host_is_stale_only_once_it_expires(tmp_path, db):
    path = tmp_path / "understudy.db"
    now = time.time()
    row = {"task": "intent", "owner": "x", "host": "elsewhere", "pid": 1, "acquired_at": now}
    with db.conn:
        db["distill_locks"].insert({**row, "heartbeat_at": now, "expires_at": now + 60})
    with pytest.raises(RunInProgress), TaskLock(path, "intent"):
        pass
    with db.conn:
        db["distill_locks"].update("intent", {"expires_at": now - 1})
    with TaskLock(path, "intent") as lock:
        assert lock.replaced["host"] == "elsewhere"


def test_the_heartbeat_renews_the_lock_and_the_run(tmp_path, db):
    path = tmp_path / "understudy.db"
    insert_run(db, {"id": "r", "task": "intent", "started_at": 0, "status": "running"})
    with TaskLock(path, "intent", ttl_s=5, heartbeat_s=0.05) as lock:
        lock.attach(db, "r")
        first = get_lock(db, "intent")["expires_at"]
        time.sleep(0.3)
        assert get_lock(db, "intent")["expires_at"] > first
        assert get_run(db, "r")["heartbeat_at"] > 0
    assert get_lock(db, "intent") is None


def test_a_run_with_no_heartbeat_for_the_ttl_is_marked_failed(db):
    old = time.time() - 1000
    insert_run(
        db,
        {
            "id": "r",
            "task": "t",
            "started_at": old,
            "status": "running",
            "host": "elsewhere",
            "pid": 1,
            "heartbeat_at": old,
        },
    )
    assert recover_stale_runs(db, ttl_s=300) == ["r"]
    assert get_run(db, "r")["reason"].startswith("crashed: no heartbeat since")
