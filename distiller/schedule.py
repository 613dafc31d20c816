"""``understudy distill schedule``: a long-running worker that starts runs.

Three reasons to run a task: the cron schedule (nightly by default, in a configurable
timezone); enough new teacher answers since the task's last run (after a cooldown); and, on
start, a scheduled run that was missed while the worker was down. Runs go one at a time; a
task another process is already distilling is skipped, never run twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distiller.augment import Teacher
from distiller.config import DistillConfig, ScheduleConfig
from distiller.lock import RunInProgress, recover_stale_runs
from distiller.pipeline import RunOutcome, db_path_of, run_distillation
from storage.database import open_database
from storage.distill_queries import count_teacher_answers, last_run, tasks_with_teacher_answers

log = logging.getLogger("understudy.distiller")

RunFn = Callable[..., RunOutcome]


def cron_trigger(config: ScheduleConfig) -> Any:
    """The cron trigger: 5 crontab fields, or 6 with seconds first."""
    from apscheduler.triggers.cron import CronTrigger

    fields = config.cron.split()
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=dow,
            timezone=config.timezone,
        )
    return CronTrigger.from_crontab(config.cron, timezone=config.timezone)


class DistillScheduler:
    """Schedules runs with apscheduler; every decision reads the database, so a restarted
    worker picks up where the last one stopped."""

    def __init__(
        self,
        data_dir: Path,
        config: DistillConfig | None = None,
        *,
        teacher: Teacher | None = None,
        run: RunFn = run_distillation,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config or DistillConfig()
        self.teacher = teacher
        self.run = run
        self._scheduler: Any = None
        self._busy = threading.Lock()

    # -- decisions -------------------------------------------------------------------------

    def tasks(self) -> list[str]:
        if self.config.schedule.tasks:
            return list(self.config.schedule.tasks)
        db = open_database(db_path_of(self.data_dir))
        try:
            return tasks_with_teacher_answers(db)
        finally:
            db.conn.close()

    def due_by_count(self, task: str, now: float | None = None) -> bool:
        """Enough new teacher answers since the last run, and the cooldown is over."""
        cfg = self.config.for_task(task).schedule
        if cfg.new_examples_trigger <= 0:
            return False
        now = time.time() if now is None else now
        db = open_database(db_path_of(self.data_dir))
        try:
            last = last_run(db, task)
            if last is not None and last["status"] == "running":
                return False
            if last is not None and (last["finished_at"] or 0) + cfg.cooldown_s > now:
                return False
            since = last["started_at"] if last else None
            return count_teacher_answers(db, task, since=since) >= cfg.new_examples_trigger
        finally:
            db.conn.close()

    def missed(self, task: str, now: float | None = None) -> bool:
        """A cron time passed since the task's last run (or its first answer, if never run)."""
        now_dt = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
        db = open_database(db_path_of(self.data_dir))
        try:
            last = last_run(db, task)
            if last is not None:
                since = last["started_at"]
            else:
                row = db.execute(
                    "select min(created_at) from requests where task = ?", [task]
                ).fetchone()
                since = row[0]
        finally:
            db.conn.close()
        if since is None:
            return False
        start = dt.datetime.fromtimestamp(since, dt.UTC)
        trigger = cron_trigger(self.config.for_task(task).schedule)
        fire = trigger.get_next_fire_time(None, start)
        return fire is not None and fire <= now_dt

    # -- actions ---------------------------------------------------------------------------

    def run_task(self, task: str, trigger: str) -> RunOutcome | None:
        with self._busy:  # one run at a time in this worker
            try:
                return self.run(
                    self.data_dir, task, self.config, trigger=trigger, teacher=self.teacher
                )
            except RunInProgress as exc:
                log.info("task %s: %s; not starting another", task, exc)
            except Exception:
                log.exception("task %s: the %s run could not start", task, trigger)
            return None

    def run_scheduled(self) -> None:
        for task in self.tasks():
            self.run_task(task, "cron")

    def check_counts(self) -> None:
        for task in self.tasks():
            if self.due_by_count(task):
                self.run_task(task, "count")

    def catch_up(self) -> None:
        for task in self.tasks():
            if self.missed(task):
                log.info("task %s: a scheduled run was missed; running it now", task)
                self.run_task(task, "catch-up")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Recover crashed runs, then schedule; returns at once (jobs run in a thread)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        cfg = self.config.schedule
        db = open_database(db_path_of(self.data_dir))
        try:
            for run_id in recover_stale_runs(db, ttl_s=cfg.lock_ttl_s):
                log.warning("run %s had crashed; marked failed", run_id)
        finally:
            db.conn.close()
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=cfg.timezone,
        )
        scheduler.add_job(self.run_scheduled, cron_trigger(cfg), id="cron", name="scheduled run")
        if cfg.new_examples_trigger > 0:
            scheduler.add_job(
                self.check_counts, "interval", seconds=cfg.check_interval_s, id="count"
            )
        if cfg.catch_up:
            scheduler.add_job(self.catch_up, id="catch-up", name="missed runs")
        scheduler.start()
        self._scheduler = scheduler
        job = scheduler.get_job("cron")
        log.info("distiller schedule started; next scheduled run %s", job.next_run_time)

    def stop(self, wait: bool = True) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None

    def serve_forever(self, stop: threading.Event | None = None) -> None:
        """Run until SIGINT/SIGTERM (or ``stop`` is set); a run in progress is finished."""
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        self.start()
        try:
            stop.wait()
        finally:
            log.info("distiller schedule stopping (waiting for a run in progress)")
            self.stop(wait=True)
