"""The database's settings (``[storage]``) and where it lives."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

DB_FILENAME = "understudy.db"
"""The database file, inside the data directory."""


def db_path(data_dir: Path) -> Path:
    """The database of a data directory."""
    return Path(data_dir) / DB_FILENAME


URL_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


def database_address(data_dir: Path, url: str = "") -> Path | str:
    """Where the database is: ``url``'s file for ``sqlite:///path``, ``url`` itself for
    ``postgresql://...``, and the data directory's ``understudy.db`` when ``url`` is empty."""
    if not url:
        return db_path(data_dir)
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return url


@dataclass
class StorageConfig:
    """The database and the request log (write-behind queue with group commit)."""

    url: str = ""
    """The database: ``sqlite:///path/to/file.db`` or ``postgresql://user:password@host/db``
    (gateway replicas and distiller workers share one PostgreSQL database); empty: the
    SQLite file ``understudy.db`` in the data directory."""

    queue_size: int = 20000
    """Rows waiting to be written; when full, new rows are dropped and counted, never blocked."""
    commit_interval_ms: float = 50.0
    """Time between group commits: a crash loses the rows of the last one and of the write in
    flight (``understudy_log_unwritten_age_seconds`` shows it)."""
    batch_size: int = 1000
    """Largest number of rows written in one transaction."""
    busy_timeout_ms: int = 2000
    """How long a write waits for a lock held by another process before retrying later
    (PostgreSQL: the connections' ``lock_timeout``)."""
    retention_days: float = 0.0
    """Delete requests, student attempts and feedback older than this many days (0: keep all)."""
    retention_interval_s: float = 3600.0
    """How often the gateway applies ``retention_days`` (in small batches, off the serving path)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first ``storage.*`` setting with an impossible value."""
        checks = [
            (
                not self.url or self.url.startswith(URL_SCHEMES),
                "storage.url must start with sqlite:/// or postgresql://",
            ),
            (self.queue_size > 0, "storage.queue_size must be positive"),
            (0 < self.commit_interval_ms <= 100, "storage.commit_interval_ms must be in (0, 100]"),
            (self.batch_size > 0, "storage.batch_size must be positive"),
            (self.retention_days >= 0, "storage.retention_days must be >= 0"),
            (self.retention_interval_s > 0, "storage.retention_interval_s must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        postgres = self.url.startswith(URL_SCHEMES[1:])
        if postgres and importlib.util.find_spec("psycopg_pool") is None:
            raise ValueError(
                "storage.url names PostgreSQL, which needs psycopg: "
                "pip install 'understudy[postgres]'"
            )
