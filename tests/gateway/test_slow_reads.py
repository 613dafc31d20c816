"""Slow reads cannot starve the gateway: the dashboard's queries and the rendering of /metrics
run on threads of their own, and what clients can name (tasks by fingerprint, metric labels)
is bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from tests.teacher_stub import StubTeacher
from understudy.gateway.accounting.metrics import OTHER, LabelCap, Metrics
from understudy.gateway.api import routes
from understudy.gateway.api.dashboard import routes as dashboard_routes
from understudy.gateway.app import create_app
from understudy.gateway.serving.tasks import OVERFLOW_TASK, AutoTasks
from understudy.settings import load_settings
from understudy.storage.records import RequestRecord
from understudy.storage.request_log import RequestLogWriter

ADMIN = "admin-key-for-slow-reads"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    stub = StubTeacher()
    stub.start()
    env = {
        "UNDERSTUDY_DATA_DIR": str(tmp_path_factory.mktemp("reads") / "data"),
        "UNDERSTUDY_TEACHER_URL": stub.base_url,
        "UNDERSTUDY_STUDENT_BACKEND": "none",
        "UNDERSTUDY_ADMIN_KEY": ADMIN,
        "UNDERSTUDY_MAX_AUTO_TASKS": "3",
        "UNDERSTUDY_STORAGE_COMMIT_INTERVAL_MS": "20",
    }
    try:
        with TestClient(app=create_app(load_settings(env=env))) as test_client:
            yield test_client
    finally:
        stub.stop()


def _in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


def test_slow_dashboard_loads_leave_readiness_and_feedback_their_threads(client, monkeypatch):
    """Six dashboard loads held the shared thread pool; /ready and /v1/feedback timed out."""
    release = threading.Event()
    real_gather = dashboard_routes.gather

    def slow_gather(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)  # a read over a large log, held until the test lets it go
        return real_gather(*args, **kwargs)

    monkeypatch.setattr(dashboard_routes, "gather", slow_gather)
    client.get(f"/dashboard?key={ADMIN}", follow_redirects=False)  # the session cookie
    loads = [_in_thread(lambda: client.get("/dashboard")) for _ in range(8)]
    try:
        ready, ready_out = _in_thread(lambda: client.get("/ready"))
        fed, fed_out = _in_thread(
            lambda: client.post("/v1/feedback", json={"request_id": "req_none", "score": 1})
        )
        ready.join(15)
        fed.join(15)
        assert ready_out and ready_out[0].status_code in (200, 503)
        assert fed_out and fed_out[0].status_code == 404
    finally:
        release.set()
        for thread, _ in loads:
            thread.join(30)
    assert all(out and out[0].status_code == 200 for _, out in loads)


def test_metrics_are_rendered_off_the_event_loop(client, monkeypatch):
    """Three scrapes of a 19 MB /metrics held /health for 5.4 s."""
    release = threading.Event()
    real_render = routes.generate_latest

    def slow_render(registry: Any) -> bytes:
        release.wait(30)
        return real_render(registry)

    monkeypatch.setattr(routes, "generate_latest", slow_render)
    scrape, scraped = _in_thread(lambda: client.get("/metrics"))
    try:
        health, healthy = _in_thread(lambda: client.get("/health"))
        health.join(15)
        assert healthy and healthy[0].status_code == 200
        assert not scraped  # still rendering
    finally:
        release.set()
        scrape.join(30)
    assert scraped[0].status_code == 200


def test_prompt_fingerprints_beyond_the_cap_share_one_overflow_task(client):
    """20,000 distinct system prompts made 20,000 tasks."""
    tasks = []
    for i in range(6):
        messages = [
            {"role": "system", "content": f"You are assistant {'abcdef'[i]} of the demo."},
            {"role": "user", "content": "What is 2+2?"},
        ]
        response = client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
        assert response.status_code == 200
        tasks.append(response.headers["x-understudy-task"])
    assert len(set(tasks[:3])) == 3 and all(t.startswith("auto-") for t in tasks[:3])
    assert tasks[3:] == [OVERFLOW_TASK] * 3
    scraped = client.get("/metrics").text
    assert "understudy_auto_tasks_overflowed_total 3.0" in scraped
    headed = client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-understudy-task": "named-by-header"},
    )
    assert headed.headers["x-understudy-task"] == "named-by-header"  # not capped


def test_tasks_in_the_log_count_towards_the_cap():
    tasks = AutoTasks(2)
    tasks.seed(["auto-a-1", "auto-b-2", "auto-c-3"])
    assert tasks.admit("auto-a-1") == "auto-a-1"
    assert tasks.admit("auto-new-4") == OVERFLOW_TASK and tasks.overflowed == 1


def test_metric_labels_from_clients_are_bounded(tmp_path):
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]
    metrics = Metrics(RequestLogWriter(tmp_path / "understudy.db"))
    metrics.task.limit = metrics.family.limit = 3
    for i in range(10):
        record = RequestRecord(
            id=f"req_{i}",
            created_at=0.0,
            endpoint=f"family{'abcdefghij'[i]}",
            task=f"task-{i}",
            task_source="header",
            requested_model="m",
            served_by="passthrough",
            status="ok",
            request_json="",
            http_method="POST",
            http_status=200,
            latency_ms=1.0,
            teacher_cost_usd=0.01,
        )
        metrics.observe_passthrough(record)
        metrics.observe_costs(record)
    text = httpx.Response(200, content=_render(metrics)).text
    assert text.count("understudy_passthrough_requests_total{") == 4  # 3 named + (other)
    assert text.count("understudy_teacher_spend_usd_total{") == 4


def _render(metrics: Metrics) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry)
