"""``distiller.schedule.in_gateway``: the gateway runs the distiller's schedule while it serves."""

import signal
import time

import httpx

from tests.distiller.conftest import log_intents
from tests.distiller.test_schedule import process_gone
from tests.gateway_process import GatewayProcess
from understudy.storage.database import open_database
from understudy.storage.distill_queries import list_runs

SCHEDULE_ENV = {
    "UNDERSTUDY_DISTILLER_SCHEDULE_IN_GATEWAY": "true",
    "UNDERSTUDY_DISTILLER_SCHEDULE_CRON": "* * * * * *",  # every second
    "UNDERSTUDY_DISTILLER_SCHEDULE_NEW_EXAMPLES_TRIGGER": "0",
    "UNDERSTUDY_DISTILLER_SCHEDULE_FIRST_STUDENT_TRIGGER": "0",
    "UNDERSTUDY_DISTILLER_SCHEDULE_CATCH_UP": "false",
    # too few examples: each run stops early as "skipped", which shows that it fired
    "UNDERSTUDY_DISTILLER_DATASET_MIN_EXAMPLES": "10000",
    "UNDERSTUDY_STUDENT_BACKEND": "none",
}


def wait_for_run(db, task, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in list_runs(db, task) if r["status"] != "running"]
        if runs:
            return runs[-1]
        time.sleep(0.1)
    raise AssertionError("the schedule never started a run")


def test_the_schedule_starts_and_stops_with_the_gateway(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = open_database(data / "understudy.db")
    log_intents(db, "intent", 5)
    gateway = GatewayProcess("http://127.0.0.1:9/v1", data, env=SCHEDULE_ENV)
    with gateway:
        run = wait_for_run(db, "intent")
        assert (run["trigger"], run["status"]) == ("cron", "skipped")
        assert run["reason"] == "5 usable examples < min_examples 10000"
        worker = run["pid"]
        assert worker != gateway.proc.pid and not process_gone(worker)  # its own process
        assert httpx.get(gateway.url + "/health").status_code == 200
        assert gateway.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert process_gone(worker)
    count = len(list_runs(db, "intent"))
    time.sleep(1.5)
    assert len(list_runs(db, "intent")) == count  # nothing fires once the gateway is gone
    assert "distiller schedule stopped" in gateway.output(), gateway.output()
    assert "request log flushed" in gateway.output()  # a graceful stop
    db.conn.close()


def test_the_schedule_is_only_started_when_configured(tmp_path):
    from understudy.distiller.schedule import ScheduleProcess
    from understudy.gateway.teacher.sync import SyncTeacher
    from understudy.schedule import schedule_for
    from understudy.settings import load_settings

    assert schedule_for(load_settings(env={}, overrides={"data_dir": str(tmp_path)})) is None
    settings = load_settings(env=SCHEDULE_ENV, overrides={"data_dir": str(tmp_path)})
    schedule = schedule_for(settings)
    assert isinstance(schedule, ScheduleProcess) and not schedule.is_alive()
    assert schedule.config is settings.distiller and schedule.data_dir == tmp_path
    assert isinstance(schedule.teacher, SyncTeacher)
