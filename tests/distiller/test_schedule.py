import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.distiller.conftest import log_intents
from understudy.distiller.config import DatasetConfig, DistillConfig, ScheduleConfig
from understudy.distiller.lock import TaskLock
from understudy.distiller.schedule import DistillScheduler, cron_trigger
from understudy.storage.distill_queries import get_run, insert_run, list_runs


def config(**schedule) -> DistillConfig:
    """Runs that stop early for lack of data: what is tested here is when they start."""
    defaults = {
        "new_examples_trigger": 0,
        "first_student_trigger": 0,
        "catch_up": False,
        "cron": "0 3 * * *",
    }
    return DistillConfig(
        dataset=DatasetConfig(min_examples=10_000),
        schedule=ScheduleConfig(**(defaults | schedule)),
    )


def wait_for_runs(db, task, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = list_runs(db, task)
        if len(runs) >= count and all(r["status"] != "running" for r in runs):
            return runs
        time.sleep(0.05)
    raise AssertionError(f"expected {count} runs, got {len(list_runs(db, task))}")


@pytest.fixture
def scheduler_for(tmp_path):
    started = []

    def make(cfg):
        scheduler = DistillScheduler(tmp_path, cfg)
        started.append(scheduler)
        return scheduler

    yield make
    for scheduler in started:
        scheduler.stop()


def test_the_cron_schedule_fires(db, tmp_path, scheduler_for):
    log_intents(db, "intent", 5)
    scheduler_for(config(cron="* * * * * *")).start()  # every second

    (run, *_) = wait_for_runs(db, "intent", 1)
    assert run["trigger"] == "cron" and run["status"] == "skipped"
    assert run["reason"] == "5 usable examples < min_examples 10000"


def test_new_teacher_answers_trigger_a_run_once_per_batch(db, tmp_path, scheduler_for):
    log_intents(db, "intent", 6)
    scheduler_for(config(new_examples_trigger=5, check_interval_s=0.1, cooldown_s=0)).start()

    wait_for_runs(db, "intent", 1)
    time.sleep(0.5)
    assert len(list_runs(db, "intent")) == 1  # nothing new since that run
    log_intents(db, "intent", 5, start=time.time(), seed=1)
    runs = wait_for_runs(db, "intent", 2)
    assert [r["trigger"] for r in runs] == ["count", "count"]


def test_the_count_trigger_waits_for_the_cooldown(db, tmp_path):
    log_intents(db, "intent", 6, start=time.time() - 100)
    scheduler = DistillScheduler(tmp_path, config(new_examples_trigger=5, cooldown_s=3600))
    assert scheduler.due_by_count("intent")
    scheduler.run_task("intent", "count")
    log_intents(db, "intent", 6, start=time.time(), seed=1)
    assert not scheduler.due_by_count("intent")
    assert scheduler.due_by_count("intent", now=time.time() + 3601)


def test_until_the_task_has_a_student_fewer_new_answers_start_a_run(db, tmp_path):
    from understudy.storage.registry import promote, register_model

    log_intents(db, "intent", 6, start=time.time() - 100)
    sooner = config(new_examples_trigger=1000, first_student_trigger=5, cooldown_s=0)
    assert DistillScheduler(tmp_path, sooner).due_by_count("intent")
    off = config(new_examples_trigger=1000, first_student_trigger=0, cooldown_s=0)
    assert not DistillScheduler(tmp_path, off).due_by_count("intent")

    # Once a student is the champion, the usual count applies.
    promote(db, register_model(db, "intent", base="classical").id)
    assert not DistillScheduler(tmp_path, sooner).due_by_count("intent")
    usual = config(new_examples_trigger=5, first_student_trigger=1000, cooldown_s=0)
    assert DistillScheduler(tmp_path, usual).due_by_count("intent")


def test_the_first_student_trigger_alone_starts_runs(db, tmp_path, scheduler_for):
    log_intents(db, "intent", 6)
    cfg = config(first_student_trigger=5, check_interval_s=0.1, cooldown_s=0)
    scheduler_for(cfg).start()

    (run,) = wait_for_runs(db, "intent", 1)
    assert run["trigger"] == "count"


def test_teacher_answers_while_a_promoted_student_loads_do_not_trigger_a_run(db, tmp_path):
    from understudy.storage.distill_queries import SERVING_EVENT
    from understudy.storage.registry import log_event

    now = time.time()
    run = {"id": "r1", "task": "intent", "status": "succeeded", "promoted": 1}
    insert_run(db, run | {"started_at": now - 400, "finished_at": now - 60, "candidate_id": "v2"})
    log_intents(db, "intent", 8, start=now - 50)  # the promoted student is still loading
    scheduler = DistillScheduler(tmp_path, config(new_examples_trigger=5, cooldown_s=0))
    assert not scheduler.due_by_count("intent")

    log_event(db, "intent", SERVING_EVENT, {"model": "v2"})  # the gateway serves it now
    assert not scheduler.due_by_count("intent")  # the answers of the swap do not count
    log_intents(db, "intent", 5, start=time.time() + 1, seed=1)
    assert scheduler.due_by_count("intent")


def test_a_promotion_no_gateway_serves_counts_from_the_promotion_after_a_grace(db, tmp_path):
    from understudy.distiller.schedule import SWAP_GRACE_S

    now = time.time()
    run = {"id": "r1", "task": "intent", "status": "succeeded", "promoted": 1}
    insert_run(db, run | {"started_at": now - 400, "finished_at": now - 300, "candidate_id": "v2"})
    log_intents(db, "intent", 5, start=now - 350)  # during the run: not counted
    log_intents(db, "intent", 5, start=now - 200, seed=1)
    scheduler = DistillScheduler(tmp_path, config(new_examples_trigger=5, cooldown_s=0))
    assert not scheduler.due_by_count("intent")
    assert scheduler.due_by_count("intent", now=now - 300 + SWAP_GRACE_S + 1)


def test_a_missed_scheduled_run_runs_once_on_start(db, tmp_path, scheduler_for):
    log_intents(db, "intent", 5, start=time.time() - 5 * 86400)
    two_days_ago = time.time() - 2 * 86400
    insert_run(
        db,
        {
            "id": "old",
            "task": "intent",
            "started_at": two_days_ago,
            "finished_at": two_days_ago + 60,
            "status": "succeeded",
            "trigger": "cron",
        },
    )
    scheduler = scheduler_for(config(catch_up=True))
    assert scheduler.missed("intent")
    scheduler.start()

    runs = wait_for_runs(db, "intent", 2)
    assert runs[0]["trigger"] == "catch-up"
    assert not scheduler.missed("intent")  # that run covers it


def test_a_task_being_distilled_elsewhere_is_not_run_twice(db, tmp_path):
    log_intents(db, "intent", 5)
    scheduler = DistillScheduler(tmp_path, config())
    with TaskLock(tmp_path / "understudy.db", "intent"):
        assert scheduler.run_task("intent", "cron") is None
    assert list_runs(db, "intent") == []
    assert scheduler.run_task("intent", "cron").status == "skipped"


def test_starting_the_schedule_marks_runs_of_a_dead_worker_failed(db, tmp_path, scheduler_for):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    insert_run(
        db,
        {
            "id": "crashed",
            "task": "intent",
            "started_at": time.time(),
            "status": "running",
            "host": __import__("socket").gethostname(),
            "pid": dead.pid,
            "heartbeat_at": time.time(),
        },
    )
    scheduler_for(config()).start()
    run = get_run(db, "crashed")
    assert run["status"] == "failed" and run["reason"].startswith("crashed: worker process")


def test_cron_times_follow_the_configured_timezone():
    trigger = cron_trigger(ScheduleConfig(cron="0 3 * * *", timezone="Europe/Paris"))
    start = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    fire = trigger.get_next_fire_time(None, start)
    assert fire == dt.datetime(2026, 7, 2, 3, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert fire.astimezone(dt.UTC).hour == 1


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie is left."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_stopping_the_schedule_process_stops_its_run_and_training(db, tmp_path):
    """What the gateway does at shutdown: a run still going is killed with its training
    process and marked failed; the schedule's process is gone."""
    from understudy.distiller.config import TrainConfig
    from understudy.distiller.process import PID_FILE
    from understudy.distiller.schedule import ScheduleProcess

    log_intents(db, "intent", 40, start=time.time() - 100)
    cfg = DistillConfig(
        dataset=DatasetConfig(min_examples=10, eval_min=5, near_duplicate_threshold=1.0),
        # a "training" that never ends: the launcher replaces the worker's Python
        train=TrainConfig(launcher=[sys.executable, "-c", "import time; time.sleep(120)"]),
        schedule=ScheduleConfig(cron="* * * * * *", new_examples_trigger=0, catch_up=False),
    )
    schedule = ScheduleProcess(tmp_path, cfg, stop_timeout_s=1.0)
    schedule.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = list_runs(db, "intent")
            if runs and (Path(runs[0]["run_dir"]) / PID_FILE).is_file():
                break
            time.sleep(0.1)
        (run,) = list_runs(db, "intent")
        assert run["status"] == "running" and run["pid"] == schedule.pid
        training = int((Path(run["run_dir"]) / PID_FILE).read_text())
        worker = schedule.pid
    finally:
        schedule.stop()
    (run,) = list_runs(db, "intent")
    assert run["status"] == "failed" and run["reason"] == "interrupted: the gateway stopped"
    assert process_gone(worker) and not schedule.is_alive()
    deadline = time.monotonic() + 5
    while not process_gone(training) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(training)
