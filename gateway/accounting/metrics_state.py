"""Metrics read at scrape time: the serving students (in memory) and distillation runs (the
small ``distill_runs`` table)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from understudy.storage.database import Store
from understudy.storage.reports import distill_run_counts, last_distill_success

log = logging.getLogger("understudy.metrics")

Family = GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily


@dataclass(frozen=True)
class StudentState:
    """What a scrape shows of the student serving one task."""

    task: str
    version: str
    mode: str
    threshold: float
    """Confidence above which the student serves (``inf``: it serves nothing)."""
    quality_target: float
    samples: int
    """Shadow comparisons in the live agreement window."""
    agreement: float | None
    """Live agreement over that window (None: no comparison yet)."""


class ServingStudents(Protocol):
    """Whatever knows which students serve (the serving layer's pool)."""

    def student_states(self) -> Sequence[StudentState]:
        """The serving students, one per task with a champion."""
        ...


class StudentCollector(Collector):
    """Per task with a champion: version, mode, router threshold, live shadow agreement."""

    def __init__(self, students: ServingStudents) -> None:
        self.students = students

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
        for state in sorted(self.students.student_states(), key=lambda s: s.task):
            task = state.task
            champion.add_metric([task], {"version": state.version, "mode": state.mode})
            threshold.add_metric([task], state.threshold)
            target.add_metric([task], state.quality_target)
            samples.add_metric([task], state.samples)
            if state.agreement is not None:
                agreement.add_metric([task], state.agreement)
        yield from (champion, threshold, target, agreement, samples)


class DistillCollector(Collector):
    """Distillation runs by task and outcome, and each task's last successful run."""

    def __init__(self, db_path: Path) -> None:
        self.store = Store(db_path, busy_timeout_ms=200)

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

    def _read(self) -> tuple[list[dict[str, Any]], dict[str, float]]:
        if not self.store.exists():
            return [], {}
        with self.store.read() as db:
            return distill_run_counts(db), last_distill_success(db)
