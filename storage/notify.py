"""Registry changes told at once on PostgreSQL (``LISTEN``/``NOTIFY``).

A promotion, rollback or mode change notifies the ``understudy_registry`` channel with the
task's name in the same transaction (delivered when it commits). A gateway listens on a
connection of its own and re-reads the registry at once instead of at its next poll; the poll
(``student.reload_interval_s``) stays, for SQLite and for a notification lost while the
listener was reconnecting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from understudy.storage.engine import Address, Database, dialect, is_postgres

CHANNEL = "understudy_registry"
log = logging.getLogger("understudy.storage")


def notify_change(db: Database, task: str) -> None:
    """Tell listening gateways that ``task``'s serving state changed (PostgreSQL; on commit)."""
    if dialect(db) == "postgresql":
        db.execute("select pg_notify(?, ?)", [CHANNEL, task])


class RegistryListener:
    """Calls ``on_change(task)`` from a thread of its own for every registry notification."""

    def __init__(
        self, address: Address, on_change: Callable[[str], None], *, retry_s: float = 1.0
    ) -> None:
        self.address, self.on_change, self.retry_s = address, on_change, retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()
        """Set while a connection listens (tests wait for it)."""

    @property
    def enabled(self) -> bool:
        return is_postgres(self.address)

    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="understudy-listen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - unreachable now: the poll still works
                self.listening.clear()
                log.warning("registry notifications lost (%s); listening again", exc)
                self._stop.wait(self.retry_s)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(str(self.address), autocommit=True) as conn:
            conn.execute(f"listen {CHANNEL}")
            self.listening.set()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    self.on_change(note.payload)
