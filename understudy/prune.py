"""``understudy prune``: delete old rows of the traffic log once, now."""

from __future__ import annotations

import sys
import time

from understudy.settings import Settings
from understudy.storage.database import Store
from understudy.storage.engine import describe
from understudy.storage.retention import count_older, parse_age, prune, vacuum


def prune_log(
    settings: Settings, *, older_than: str, dry_run: bool = False, vacuum_after: bool = False
) -> int:
    """Delete requests, student attempts and feedback older than ``older_than`` (``"90d"``)."""
    try:
        age_s = parse_age(older_than)
    except ValueError as exc:
        print(f"understudy prune: {exc}", file=sys.stderr)
        return 2
    store = Store(settings.db_path, busy_timeout_ms=settings.storage.busy_timeout_ms)
    if not store.exists():
        print(f"no database at {describe(settings.db_path)}: nothing to prune")
        return 0
    store.migrate()
    with store.write() as db:
        cutoff = time.time() - age_s
        counts = count_older(db, cutoff) if dry_run else prune(db, cutoff, pause_s=0.01)
        verb = "would delete" if dry_run else "deleted"
        print(f"{verb} " + ", ".join(f"{n} {table}" for table, n in counts.items()))
        if vacuum_after and not dry_run:
            vacuum(db)
            print(f"vacuumed {describe(settings.db_path)}")
    return 0
