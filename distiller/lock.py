"""One run per task at a time, across processes: a lock row in the database.

The holder renews the lock from a heartbeat thread. A lock is stale, and may be taken over,
once it expired (no heartbeat for ``ttl_s``) or when its holder's process is gone (same host).
On PostgreSQL the holder also holds a session lock (``storage/advisory.py``), which the server
releases when the holder's connection ends: whoever takes it knows the row's holder is gone,
on any host, at once. Runs left ``running`` by a dead worker are marked failed by
:func:`recover_stale_runs`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from understudy.storage.advisory import SessionLock
from understudy.storage.database import Store
from understudy.storage.distill_queries import (
    acquire_lock,
    get_lock,
    get_run,
    release_lock,
    renew_lock,
    running_runs,
    set_lock_run,
    update_run,
)
from understudy.storage.engine import is_postgres

if TYPE_CHECKING:
    import sqlite_utils


class RunInProgress(Exception):
    """Another live process is distilling this task."""

    def __init__(self, task: str, holder: dict[str, Any]) -> None:
        self.task, self.holder = task, holder
        super().__init__(
            f"a distillation run of task {task!r} is already going "
            f"(run {holder.get('run_id') or '?'}, pid {holder['pid']} on {holder['host']})"
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(row: dict[str, Any], now: float | None = None) -> str | None:
    """Why the holder of a lock (or a running run) is gone, or None while it may be alive."""
    now = time.time() if now is None else now
    if row.get("host") == socket.gethostname() and row.get("pid") and not pid_alive(row["pid"]):
        return f"worker process {row['pid']} is no longer running"
    if row.get("expires_at") is not None and row["expires_at"] < now:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["heartbeat_at"]))
        return f"no heartbeat since {since} UTC"
    return None


class TaskLock:
    """Context manager holding the lock of one task, renewed by a heartbeat thread."""

    def __init__(
        self, db_path: Path, task: str, *, ttl_s: float = 300.0, heartbeat_s: float = 30.0
    ) -> None:
        self.db_path, self.task = db_path, task
        self.store = Store(db_path)
        self.ttl_s, self.heartbeat_s = ttl_s, heartbeat_s
        self.owner = uuid.uuid4().hex
        self.replaced: dict[str, Any] | None = None
        self.run_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: SessionLock | None = None

    def __enter__(self) -> TaskLock:
        self.store.migrate()
        if is_postgres(self.store.path):
            self._hold_session()
        try:
            with self.store.write() as db:
                taken, before = acquire_lock(
                    db,
                    self.task,
                    owner=self.owner,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    ttl_s=self.ttl_s,
                    # holding the session lock, whoever wrote the row has no session left
                    is_stale=lambda row: self._session is not None or holder_gone(row) is not None,
                )
                if taken and before is not None:
                    self._fail_replaced_run(db, before)
        except BaseException:
            self._release_session()
            raise
        if not taken:
            assert before is not None
            raise RunInProgress(self.task, before)
        self.replaced = before
        self._thread = threading.Thread(target=self._beat, name="distill-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _fail_replaced_run(self, db: sqlite_utils.Database, before: dict[str, Any]) -> None:
        """The run of a lock taken over is marked failed: its worker is gone (on another host
        its row would otherwise stay ``running`` until the lock's expiry)."""
        run = get_run(db, before["run_id"]) if before.get("run_id") else None
        if run is None or run["status"] != "running":
            return
        why = holder_gone(before) or "its worker's database session ended"
        update_run(
            db, run["id"], status="failed", finished_at=time.time(), reason=f"crashed: {why}"
        )

    def _hold_session(self) -> None:
        """Take the task's session lock, or refuse: its holder's session is alive."""
        session = SessionLock(self.store.path, f"understudy-distill:{self.task}")
        if not session.try_acquire():
            with self.store.read() as db:
                holder = get_lock(db, self.task)
            raise RunInProgress(
                self.task, holder or {"pid": "?", "host": "another host (starting)"}
            )
        self._session = session

    def _release_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.release()

    def attach(self, db: sqlite_utils.Database, run_id: str) -> None:
        """Name the run holding the lock; the heartbeat then also renews the run row."""
        self.run_id = run_id
        set_lock_run(db, self.task, self.owner, run_id)

    def _beat(self) -> None:
        with self.store.write() as db:  # this thread's own connection
            while not self._stop.wait(self.heartbeat_s):
                renew_lock(db, self.task, self.owner, self.ttl_s)
                if self.run_id is not None:
                    update_run(db, self.run_id, heartbeat_at=time.time())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            with self.store.write() as db:
                release_lock(db, self.task, self.owner)
        finally:
            self._release_session()


def recover_stale_runs(db: sqlite_utils.Database, *, ttl_s: float = 300.0) -> list[str]:
    """Mark failed every ``running`` run whose worker is gone; return their ids."""
    now = time.time()
    failed = []
    for run in running_runs(db):
        lock = get_lock(db, run["task"])
        if lock is not None and lock.get("run_id") == run["id"] and holder_gone(lock) is None:
            continue  # its worker still holds the lock
        beat = run.get("heartbeat_at") or run["started_at"]
        why = holder_gone({**run, "heartbeat_at": beat, "expires_at": beat + ttl_s}, now)
        if why is None and lock is None:
            why = "its lock was released without the run finishing"
        if why is None:
            continue
        update_run(db, run["id"], status="failed", finished_at=now, reason=f"crashed: {why}")
        failed.append(run["id"])
    return failed
