"""Start-up, graceful stop, readiness, the database under trouble, and the offline CLI."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import ROOT, GatewayProcess

CHAT = [{"role": "user", "content": "What is 2+2?"}]


def test_sigterm_flushes_every_acknowledged_request(stub, teacher, tmp_path):
    env = gateway_env(UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS="100")
    gw = GatewayProcess(stub.base_url, tmp_path / "data", env=env).start()
    c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)

    def one(i: int) -> str:
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": f"q{i}"}]
        )
        return raw.headers["x-request-id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(300)))
    # SIGTERM right after the last answer: a clean stop ends with status 0, not -15.
    assert gw.stop() == 0
    logged = {r["id"] for r in gw.rows()}
    assert set(ids) <= logged and len(logged) == 300
    assert "request log flushed: 300 rows written, 0 dropped" in gw.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_clean_stop_exits_with_status_0_and_no_traceback(stub, teacher, tmp_path, sig):
    gw = GatewayProcess(stub.base_url, tmp_path / "data", env=gateway_env()).start()
    c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    c.chat.completions.create(model="m", messages=CHAT)
    assert gw.stop(sig) == 0
    assert "request log flushed: 1 rows written, 0 dropped" in gw.output()
    assert "Traceback" not in gw.output() and "KeyboardInterrupt" not in gw.output()


@pytest.mark.sqlite_only("starts `understudy serve` itself (refused before storage)")
def test_unknown_config_key_stops_start_up_with_its_name(stub, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[teacher]\nretries = 3\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "understudy.cli",
            "serve",
            "--config",
            str(cfg),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown setting teacher.retries" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_serving_gateway_has_not_loaded_pandas(gateway, teacher):
    """sqlite-utils imports pandas whenever it is installed (the train extra installs it):
    70 MB of every gateway process that the log never uses."""
    pytest.importorskip("pandas")
    c = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=CHAT)
    assert gateway.row(raw.headers["x-request-id"])["status"] == "ok"  # the log has written
    assert gateway.proc is not None
    maps = Path(f"/proc/{gateway.proc.pid}/maps").read_text()
    assert "/pandas/" not in maps


def test_ready_reports_teacher_and_database(gateway, teacher):
    body = httpx.get(gateway.url + "/ready").json()
    assert body["status"] == "ready" and body["teacher"]["ok"] and body["database"]["ok"]
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}


@pytest.mark.sqlite_only("holds SQLite's file lock (begin exclusive) on the gateway's file")
def test_locked_database_does_not_stop_serving(stub, teacher, tmp_path):
    env = gateway_env(UNDERSTUDY_STORAGE_BUSY_TIMEOUT_MS="50")
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:
        lock = sqlite3.connect(gw.db_path, isolation_level=None)
        lock.execute("begin exclusive")
        try:
            c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            started = time.monotonic()
            for _ in range(5):
                assert c.chat.completions.create(model="m", messages=CHAT).choices
            assert time.monotonic() - started < 5
            ready = httpx.get(gw.url + "/ready")
            assert ready.status_code == 503 and ready.json()["database"]["ok"] is False
        finally:
            lock.execute("rollback")
            lock.close()
        deadline = time.monotonic() + 5
        while len(gw.rows()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(gw.rows()) == 5  # kept and written once the lock cleared
        assert gw.ready_status(200) == 200
        metrics = httpx.get(gw.url + "/metrics").text
        assert "understudy_log_failed_commits_total" in metrics


def test_tasks_and_export_commands(stub, teacher, tmp_path):
    data = tmp_path / "data"
    with GatewayProcess(stub.base_url, data, env=gateway_env()) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        for q in ("What is 2+2?", "Name a colour."):
            c.chat.completions.create(
                model="m",
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": q},
                ],
                extra_headers={"X-Understudy-Task": "quiz"},
            )
        c.chat.completions.create(
            model="m", messages=CHAT, extra_headers={"X-Understudy-Task": "other"}
        )
    run = [sys.executable, "-m", "understudy.cli"]
    env = gw.command_env()
    listed = subprocess.run(
        run + ["tasks", "--data-dir", str(data), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    counts = {t["task"]: t["requests"] for t in json.loads(listed.stdout)["tasks"]}
    assert counts == {"quiz": 2, "other": 1}
    table = subprocess.run(
        run + ["tasks", "--data-dir", str(data)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "quiz" in table and "requests" in table
    out = tmp_path / "quiz.jsonl"
    subprocess.run(
        run
        + [
            "export",
            "--task",
            "quiz",
            "--format",
            "jsonl",
            "--data-dir",
            str(data),
            "-o",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [ex["messages"][-1] for ex in lines] == [
        {"role": "assistant", "content": "4"},
        {"role": "assistant", "content": "blue"},
    ]
    assert lines[0]["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.sqlite_only("deletes the gateway's SQLite file and its WAL")
def test_a_deleted_database_is_reopened_and_ready_says_so(stub, teacher, tmp_path):
    """The writer once kept writing into the unlinked file (rows lost) with /ready all green,
    and feedback answered 500."""
    with GatewayProcess(stub.base_url, tmp_path / "data", env=gateway_env()) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="m", messages=CHAT)
        assert len(gw.wait_rows()) == 1
        for suffix in ("", "-wal", "-shm"):
            gw.db_path.with_name(gw.db_path.name + suffix).unlink(missing_ok=True)
        raw = c.chat.completions.with_raw_response.create(model="m", messages=CHAT)
        rid = raw.headers["x-request-id"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ready = httpx.get(gw.url + "/ready")
            database = ready.json()["database"]
            if database["reopened"]:
                break
            time.sleep(0.05)
        assert ready.status_code == 200 and database["reopened"] == 1
        assert gw.row(rid)["status"] == "ok"  # in the new file
        assert "deleted" in database["notice"]
        feedback = httpx.post(gw.url + "/v1/feedback", json={"request_id": rid, "score": 1})
        assert feedback.status_code == 200, feedback.text
        assert "understudy_log_reopened_total 1.0" in httpx.get(gw.url + "/metrics").text
