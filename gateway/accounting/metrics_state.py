"""Metrics read at scrape time: the serving students (in memory) and distillation runs (the
small ``distill_runs`` table)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from understudy.gateway.serving.pool import StudentPool

log = logging.getLogger("understudy.metrics")

Family = GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily


class StudentCollector(Collector):
    """Per task with a champion: version, mode, router threshold, live shadow agreement."""

    def __init__(self, pool: StudentPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Family]:
        champion = InfoMetricFamily(
            "understudy_champion", "The student version serving each task", labels=["task"]
        )
        threshold = GaugeMetricFamily(
            "understudy_router_threshold",
            "Confidence threshold above which the student serves (+Inf: it serves nothing)",
            labels=["task"],
        )
        target = GaugeMetricFamily(
            "understudy_quality_target", "Agreement the router is held to", labels=["task"]
        )
        agreement = GaugeMetricFamily(
            "understudy_live_agreement",
            "Agreement of the student with the teacher over the recent shadow window",
            labels=["task"],
        )
        samples = GaugeMetricFamily(
            "understudy_live_agreement_samples",
            "Shadow comparisons in the live agreement window",
            labels=["task"],
        )
        for task, slot in sorted(dict(self.pool.slots).items()):
            champion.add_metric([task], {"version": slot.version.id, "mode": slot.mode})
            threshold.add_metric([task], float(slot.router.router.threshold))
            target.add_metric([task], slot.router.quality_target)
            monitor = slot.router.monitor
            samples.add_metric([task], monitor.samples)
            if monitor.agreement is not None:
                agreement.add_metric([task], monitor.agreement)
        yield from (champion, threshold, target, agreement, samples)


class DistillCollector(Collector):
    """Distillation runs by task and outcome, and each task's last successful run."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)

    def collect(self) -> Iterator[Family]:
        runs = CounterMetricFamily(
            "understudy_distill_runs",
            "Distillation runs by outcome (promoted, rejected, failed, skipped, running)",
            labels=["task", "outcome"],
        )
        last = GaugeMetricFamily(
            "understudy_distill_last_success_timestamp_seconds",
            "When the task's last distillation run that trained and was judged finished",
            labels=["task"],
        )
        try:
            counts, successes = self._read()
        except sqlite3.Error as exc:  # a scrape never fails because the database is busy
            log.warning("distill metrics unavailable: %s", exc)
            counts, successes = [], {}
        for row in counts:
            runs.add_metric([row["task"], row["outcome"]], row["runs"])
        for task, at in sorted(successes.items()):
            last.add_metric([task], at)
        yield runs
        yield last

    def _read(self) -> tuple[list[dict], dict[str, float]]:
        from understudy.storage.database import open_database
        from understudy.storage.reports import distill_run_counts, last_distill_success

        if not self.db_path.exists():
            return [], {}
        db = open_database(self.db_path, migrate_schema=False, busy_timeout_ms=200)
        try:
            return distill_run_counts(db), last_distill_success(db)
        finally:
            db.conn.close()
