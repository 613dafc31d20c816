"""The request log's settings (``[storage]``) and where the database lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DB_FILENAME = "understudy.db"
"""The database file, inside the data directory."""


def db_path(data_dir: Path) -> Path:
    """The database of a data directory."""
    return Path(data_dir) / DB_FILENAME


@dataclass
class StorageConfig:
    """The request log (SQLite, WAL, write-behind queue with group commit)."""

    queue_size: int = 20000
    """Rows waiting to be written; when full, new rows are dropped and counted, never blocked."""
    commit_interval_ms: float = 50.0
    """Longest time a row waits before its group commit: the most a crash can lose."""
    batch_size: int = 1000
    """Largest number of rows written in one transaction."""
    busy_timeout_ms: int = 2000
    """How long a write waits for a lock held by another process before retrying later."""
    retention_days: float = 0.0
    """Delete requests, student attempts and feedback older than this many days (0: keep all)."""
    retention_interval_s: float = 3600.0
    """How often the gateway applies ``retention_days`` (in small batches, off the serving path)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``storage.*`` setting with an impossible value."""
        checks = [
            (self.queue_size > 0, "storage.queue_size must be positive"),
            (0 < self.commit_interval_ms <= 100, "storage.commit_interval_ms must be in (0, 100]"),
            (self.batch_size > 0, "storage.batch_size must be positive"),
            (self.retention_days >= 0, "storage.retention_days must be >= 0"),
            (self.retention_interval_s > 0, "storage.retention_interval_s must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
