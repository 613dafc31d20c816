"""PostgreSQL session locks: held by one connection, released by the server the moment that
connection ends, however its process ended (``kill -9``, a lost host). The distill lock holds
one beside its row, so a crashed worker's lock is free at once, on any host."""

from __future__ import annotations

from understudy.storage.database import open_database
from understudy.storage.engine import Address, Database


class SessionLock:
    """``name``'s session lock on a connection of its own (PostgreSQL only)."""

    def __init__(self, address: Address, name: str) -> None:
        self.address, self.name = address, name
        self._db: Database | None = None

    def try_acquire(self) -> bool:
        """Take the lock unless another session holds it; True when taken."""
        db = open_database(self.address, migrate_schema=False)
        with db.conn:
            taken = bool(
                db.execute("select pg_try_advisory_lock(hashtext(?))", [self.name]).fetchone()[0]
            )
        if taken:
            self._db = db
        else:
            db.conn.close()
        return taken

    def release(self) -> None:
        """Give the lock back and close the connection (closing alone would release it)."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            with db.conn:
                db.execute("select pg_advisory_unlock(hashtext(?))", [self.name])
        finally:
            db.conn.close()
