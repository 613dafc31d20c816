"""Metrics read at scrape time: the serving students (in memory), distillation runs (the
small ``distill_runs`` table) and the log's totals (the hourly rollups: every process's
requests, exact with several workers)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from understudy.storage.database import Store
from understudy.storage.engine import error_types
from understudy.storage.reports import distill_run_counts, last_distill_success, log_totals
from understudy.storage.rollups import hour_of

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
        except error_types() as exc:  # a scrape never fails because the database is busy
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


LOGGED_TASK_LABELS = 2000
"""Tasks the log's totals name; the rest are summed as ``(other)``."""


class LogTotalsCollector(Collector):
    """Every request logged by any process, per task and who served it, from the rollups:
    calls, failures, teacher spend and savings. Hours before the last two are read once and
    kept (a row is logged when its request ends, so the hour it started in may still grow for
    a while); a scrape reads only the recent hours' rows."""

    def __init__(self, db_path: Path, clock: Any = time.time) -> None:
        self.store = Store(db_path, busy_timeout_ms=200)
        self.clock = clock
        self._done: dict[tuple[str, str], list[float]] = {}  # sums of the complete hours
        self._done_until = 0  # the first hour not in ``_done``

    def collect(self) -> Iterator[Family]:
        calls = CounterMetricFamily(
            "understudy_logged_requests",
            "Requests in the log (every worker process), by task and who served them",
            labels=["task", "served_by"],
        )
        failed = CounterMetricFamily(
            "understudy_logged_failures",
            "Logged requests whose status was not ok, by task and who served them",
            labels=["task", "served_by"],
        )
        spend = CounterMetricFamily(
            "understudy_logged_teacher_spend_usd",
            "Teacher spend of the logged requests (USD), by task and who served them",
            labels=["task", "served_by"],
        )
        saved = GaugeMetricFamily(
            "understudy_logged_saved_usd",
            "Net savings of the logged requests (USD), by task and who served them",
            labels=["task", "served_by"],
        )
        try:
            totals = self._totals()
        except error_types() as exc:  # a scrape never fails because the database is busy
            log.warning("log totals unavailable: %s", exc)
            totals = {}
        for (task, served_by), (n, errors, usd, net) in sorted(totals.items()):
            calls.add_metric([task, served_by], n)
            failed.add_metric([task, served_by], errors)
            spend.add_metric([task, served_by], usd)
            saved.add_metric([task, served_by], net)
        yield from (calls, failed, spend, saved)

    def _totals(self) -> dict[tuple[str, str], list[float]]:
        if not self.store.exists():
            return {}
        recent = hour_of(self.clock()) - 1  # this hour and the one before may still grow
        with self.store.read() as db:
            rows = log_totals(db, self._done_until)
        current: dict[tuple[str, str], list[float]] = {}
        for row in rows:
            complete = row["hour"] < recent
            into = self._done if complete else current
            acc = into.setdefault((row["task"], row["served_by"]), [0, 0, 0.0, 0.0])
            for i, column in enumerate(("calls", "errors", "teacher_cost_usd", "saved_usd")):
                acc[i] += row[column]
        self._done_until = max(self._done_until, recent)
        out: dict[tuple[str, str], list[float]] = {}
        named: set[str] = set()
        for (task, served_by), sums in [*self._done.items(), *current.items()]:
            if task not in named and len(named) >= LOGGED_TASK_LABELS:
                task = "(other)"
            named.add(task)
            acc = out.setdefault((task, served_by), [0, 0, 0.0, 0.0])
            for i, value in enumerate(sums):
                acc[i] += value
        return out
