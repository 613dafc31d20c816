"""``understudy distill schedule``: a long-running worker that starts runs.

Three reasons to run a task: the cron schedule (nightly by default, in a configurable
timezone); enough new teacher answers since the task's last run (after a cooldown; fewer while
the task has no student, so the first one comes sooner); and, on
start, a scheduled run that was missed while the worker was down. Runs go one at a time; a
task another process is already distilling is skipped, never run twice.

:class:`ScheduleProcess` runs the same worker as a child process of another program (the
gateway, with ``schedule.in_gateway``), so that program never waits on a run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from understudy.distiller.augment import Teacher
from understudy.distiller.config import DistillConfig, ScheduleConfig
from understudy.distiller.lock import RunInProgress, recover_stale_runs
from understudy.distiller.pipeline import RunOutcome, run_distillation
from understudy.storage.config import db_path
from understudy.storage.database import Store
from understudy.storage.distill_queries import (
    count_teacher_answers,
    first_request_at,
    last_run,
    running_runs,
    serving_since,
    tasks_with_teacher_answers,
    update_run,
)
from understudy.storage.engine import Address
from understudy.storage.registry import champion

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger("understudy.distiller")

RunFn = Callable[..., RunOutcome]

SWAP_GRACE_S = 600.0
"""How long after a promotion the count trigger waits for a gateway to begin serving the new
champion; past it (no gateway serves it: none runs, or students are off) it counts from the
promotion."""


@contextlib.contextmanager
def _database(address: Address) -> Iterator[sqlite_utils.Database]:
    """The database (a SQLite file or a PostgreSQL URL), its schema brought up to date first."""
    store = Store(address)
    store.migrate()
    with store.write() as db:
        yield db


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
        database: Address | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.database = db_path(self.data_dir) if database is None else database
        """The database (``storage.url``; the data directory's SQLite file by default)."""
        self.config = config or DistillConfig()
        self.teacher = teacher
        self.run = run
        self._scheduler: Any = None
        self._busy = threading.Lock()

    # -- decisions -------------------------------------------------------------------------

    def tasks(self) -> list[str]:
        if self.config.schedule.tasks:
            return list(self.config.schedule.tasks)
        with _database(self.database) as db:
            return tasks_with_teacher_answers(db)

    def due_by_count(self, task: str, now: float | None = None) -> bool:
        """Enough new teacher answers since the last run, and the cooldown is over.

        Enough is ``first_student_trigger`` while the task has no champion (when set), else
        ``new_examples_trigger``. After a run that promoted a student, only answers logged once
        a gateway serves it count (the ``serving`` event); until then, for up to
        :data:`SWAP_GRACE_S`, none do.
        """
        cfg = self.config.for_task(task).schedule
        if cfg.new_examples_trigger <= 0 and cfg.first_student_trigger <= 0:
            return False
        now = time.time() if now is None else now
        with _database(self.database) as db:
            enough = cfg.new_examples_trigger
            if cfg.first_student_trigger > 0 and champion(db, task) is None:
                enough = cfg.first_student_trigger
            if enough <= 0:
                return False
            last = last_run(db, task)
            if last is not None and last["status"] == "running":
                return False
            if last is not None and (last["finished_at"] or 0) + cfg.cooldown_s > now:
                return False
            since = last["started_at"] if last else None
            if last is not None and last["promoted"]:
                # Teacher answers logged while the new champion is being loaded are traffic
                # of the swap, not new data: count from when it serves.
                since = serving_since(db, task, last["candidate_id"])
                promoted_at = last["finished_at"] or last["started_at"]
                if since is None and now < promoted_at + SWAP_GRACE_S:
                    return False
                since = since if since is not None else promoted_at
            return count_teacher_answers(db, task, since=since) >= enough

    def missed(self, task: str, now: float | None = None) -> bool:
        """A cron time passed since the task's last run (or its first answer, if never run)."""
        now_dt = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
        with _database(self.database) as db:
            last = last_run(db, task)
            since = last["started_at"] if last is not None else first_request_at(db, task)
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
                    self.data_dir,
                    task,
                    self.config,
                    trigger=trigger,
                    teacher=self.teacher,
                    database=self.database,
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
        with _database(self.database) as db:
            for run_id in recover_stale_runs(db, ttl_s=cfg.lock_ttl_s):
                log.warning("run %s had crashed; marked failed", run_id)
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=cfg.timezone,
        )
        scheduler.add_job(self.run_scheduled, cron_trigger(cfg), id="cron", name="scheduled run")
        if cfg.new_examples_trigger > 0 or cfg.first_student_trigger > 0:
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


class ScheduleProcess:
    """The schedule in a child process with its own process group.

    ``stop`` asks it to finish; a run still going after ``stop_timeout_s`` is killed with its
    training process and marked failed (the champion is untouched, as for any killed run).
    If the parent dies, the child kills itself and its run the same way.
    """

    def __init__(
        self,
        data_dir: Path,
        config: DistillConfig,
        *,
        teacher: Teacher | None = None,
        log_level: str = "INFO",
        stop_timeout_s: float = 10.0,
        database: Address | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.database = db_path(self.data_dir) if database is None else database
        self.config = config
        self.teacher = teacher
        self.log_level = log_level.upper()
        self.stop_timeout_s = stop_timeout_s
        self._process: Any = None
        self._stop: Any = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve_in_child,
            args=(
                self.data_dir,
                self.config,
                self.teacher,
                self._stop,
                self.log_level,
                self.database,
            ),
            name="understudy-distill-schedule",
            daemon=True,
        )
        self._process.start()
        log.info("distiller schedule running in process %d", self._process.pid)

    def stop(self) -> None:
        """Stop the schedule; returns within ``stop_timeout_s`` plus a moment."""
        process, self._process = self._process, None
        if process is None:
            return
        self._stop.set()
        process.join(self.stop_timeout_s)
        if process.is_alive():
            log.warning("distiller schedule: stopping the run in progress")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.join()
            self._fail_runs_of(process.pid)
        log.info("distiller schedule stopped")

    def _fail_runs_of(self, pid: int) -> None:
        with _database(self.database) as db:
            for run in running_runs(db):
                if run.get("pid") == pid:
                    update_run(
                        db,
                        run["id"],
                        status="failed",
                        finished_at=time.time(),
                        reason="interrupted: the gateway stopped",
                    )


def _serve_in_child(
    data_dir: Path,
    config: DistillConfig,
    teacher: Teacher | None,
    stop: Any,
    level: str,
    database: Address,
) -> None:
    """Entry point of :class:`ScheduleProcess`'s child."""
    os.setsid()  # our own process group: the training process can be stopped with us
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)  # a line per tick
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_die_with, args=(parent.sentinel, stop), name="parent-watch", daemon=True
        ).start()
    DistillScheduler(data_dir, config, teacher=teacher, database=database).serve_forever(stop)


def _die_with(sentinel: int, stop: Any) -> None:
    from multiprocessing.connection import wait

    wait([sentinel])
    if not stop.is_set():
        log.error("distiller schedule: the parent process is gone; stopping")
        os.killpg(os.getpgid(0), signal.SIGKILL)
