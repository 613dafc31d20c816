"""Feedback on logged answers, and the admin endpoints behind the admin key."""

from __future__ import annotations

import sqlite3
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import GatewayProcess
from understudy.storage.database import open_database
from understudy.storage.registry import promote, register_model

CHAT = [{"role": "user", "content": "What is 2+2?"}]
ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def admin_gw(stub, tmp_path_factory):
    env = gateway_env(
        UNDERSTUDY_ADMIN_KEY="admin-secret",
        UNDERSTUDY_API_KEYS="client-key",
        UNDERSTUDY_STUDENT_BACKEND="none",
    )
    with GatewayProcess(stub.base_url, tmp_path_factory.mktemp("adm") / "data", env=env) as gw:
        yield gw


def feedback_rows(gw) -> list[tuple]:
    conn = sqlite3.connect(gw.db_path)
    try:
        return conn.execute("select request_id, score, correction from feedback").fetchall()
    finally:
        conn.close()


def test_feedback_is_recorded_for_a_logged_answer(admin_gw, teacher):
    c = openai.OpenAI(base_url=admin_gw.base_url, api_key="client-key", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=CHAT)
    request_id = raw.headers["x-request-id"]
    headers = {"Authorization": "Bearer client-key"}
    ok = httpx.post(
        admin_gw.base_url + "/feedback",
        headers=headers,
        json={"request_id": request_id, "score": -1, "correction": "four"},
    )
    assert ok.status_code == 200 and ok.json()["status"] == "recorded"
    unknown = httpx.post(
        admin_gw.base_url + "/feedback",
        headers=headers,
        json={"request_id": "req_nope", "score": 1},
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "request_id"
    for bad in (
        {"request_id": request_id, "score": 5},
        {"request_id": request_id},
        {"request_id": request_id, "score": 1, "extra": 1},
    ):
        response = httpx.post(admin_gw.base_url + "/feedback", headers=headers, json=bad)
        assert response.status_code == 400, bad
    assert (
        httpx.post(
            admin_gw.base_url + "/feedback", json={"request_id": request_id, "score": 1}
        ).status_code
        == 401
    )
    deadline = time.monotonic() + 5
    while not feedback_rows(admin_gw) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert feedback_rows(admin_gw) == [(request_id, -1.0, "four")]


def test_admin_endpoints_need_the_admin_key(admin_gw, teacher):
    url = admin_gw.url + "/admin/tasks"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer client-key"}).status_code == 401
    assert httpx.get(url, headers=ADMIN).json() == {"data": []}


def test_admin_mode_and_rollback(admin_gw, teacher):
    db = open_database(admin_gw.db_path)
    v1 = register_model(db, "intent", base="tiny-base")
    v2 = register_model(db, "intent", base="tiny-base")
    promote(db, v1.id)
    promote(db, v2.id)
    db.conn.close()
    base = admin_gw.url + "/admin/tasks/intent"
    bad = httpx.post(base + "/mode", headers=ADMIN, json={"mode": "sometimes"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "mode"
    shadow = httpx.post(base + "/mode", headers=ADMIN, json={"mode": "shadow"})
    assert shadow.status_code == 200 and shadow.json()["mode"] == "shadow"
    back = httpx.post(base + "/rollback", headers=ADMIN)
    assert back.json()["champion"] == "intent@v1" and back.json()["previous"] is None
    listed = httpx.get(admin_gw.url + "/admin/tasks", headers=ADMIN).json()["data"]
    assert listed == [back.json()]
    again = httpx.post(base + "/rollback", headers=ADMIN)  # it used to toggle back to v2
    assert again.status_code == 404 and "no earlier champion" in again.json()["error"]["message"]
    later = httpx.post(base + "/rollback", headers=ADMIN, json={"to": "intent@v2"})
    assert later.status_code == 404 and "not an earlier version" in later.text
    listed = httpx.get(admin_gw.url + "/admin/tasks", headers=ADMIN).json()["data"]
    assert listed[0]["champion"] == "intent@v1"
    none = httpx.post(admin_gw.url + "/admin/tasks/unknown/rollback", headers=ADMIN)
    assert none.status_code == 404


@pytest.mark.parametrize("task", ["A" * 5000, "a b", "caf\u00e9", "%2e%2e"])
def test_admin_refuses_a_task_name_outside_the_rule(admin_gw, teacher, task):
    for path, body in (("/mode", {"mode": "shadow"}), ("/rollback", None)):
        r = httpx.post(f"{admin_gw.url}/admin/tasks/{task}{path}", headers=ADMIN, json=body)
        assert r.status_code == 400, (task, path, r.text)
        assert r.json()["error"]["param"] == "task"
    names = [
        s["task"] for s in httpx.get(admin_gw.url + "/admin/tasks", headers=ADMIN).json()["data"]
    ]
    assert task not in names


def test_admin_disabled_without_admin_key(gateway, teacher):
    assert httpx.get(gateway.url + "/admin/tasks").status_code == 403
