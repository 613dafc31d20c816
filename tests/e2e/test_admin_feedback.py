"""Feedback on logged answers, and the admin endpoints behind the admin key."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env
from tests.gateway_process import GatewayProcess
from understudy.gateway.api.auth import key_id
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
    with gw.database() as db:
        return [
            tuple(row) for row in db.execute("select request_id, score, correction from feedback")
        ]


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
    with admin_gw.database() as db:
        v1 = register_model(db, "intent", base="tiny-base")
        v2 = register_model(db, "intent", base="tiny-base")
        promote(db, v1.id)
        promote(db, v2.id)
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


@pytest.fixture(scope="module")
def two_keys(stub, tmp_path_factory):
    env = gateway_env(
        UNDERSTUDY_ADMIN_KEY="admin-secret",
        UNDERSTUDY_API_KEYS="key-victim,key-attacker",
        UNDERSTUDY_STUDENT_BACKEND="none",
        UNDERSTUDY_LIMITS_REQUESTS_PER_MINUTE="6",
    )
    with GatewayProcess(stub.base_url, tmp_path_factory.mktemp("fb") / "data", env=env) as gw:
        yield gw


def _feedback(gw, key: str, body: dict) -> httpx.Response:
    return httpx.post(
        gw.base_url + "/feedback", headers={"Authorization": f"Bearer {key}"}, json=body
    )


def _feedback_rows(gw) -> list[tuple]:
    with gw.database() as db:
        return [
            tuple(row)
            for row in db.execute(
                "select request_id, correction, api_key_id, reviewed from feedback order by id"
            )
        ]


def test_feedback_only_on_the_keys_own_requests_or_with_the_admin_key(two_keys, teacher):
    """An attacker key relabelled a victim key's answers (200) and the distiller used them."""
    c = openai.OpenAI(base_url=two_keys.base_url, api_key="key-victim", max_retries=0)
    rid = c.chat.completions.with_raw_response.create(model="m", messages=CHAT).headers[
        "x-request-id"
    ]
    planted = _feedback(two_keys, "key-attacker", {"request_id": rid, "correction": "5"})
    assert planted.status_code == 404 and planted.json()["error"]["param"] == "request_id"
    own = _feedback(two_keys, "key-victim", {"request_id": rid, "correction": "four"})
    assert own.status_code == 200
    review = _feedback(two_keys, "admin-secret", {"request_id": rid, "correction": "4"})
    assert review.status_code == 200
    deadline = time.monotonic() + 5
    while len(_feedback_rows(two_keys)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    (victim, admin) = _feedback_rows(two_keys)
    assert victim == (rid, "four", key_id("key-victim"), 0)
    assert admin[:2] == (rid, "4") and admin[3] == 1 and admin[2] != key_id("key-victim")


def test_feedback_is_rate_limited_and_size_capped(two_keys, teacher):
    """A key over its limits sent 30 x 7 MiB of feedback: 30 x 200, +281 MiB on disk."""
    c = openai.OpenAI(base_url=two_keys.base_url, api_key="key-attacker", max_retries=0)
    rid = c.chat.completions.with_raw_response.create(model="m", messages=CHAT).headers[
        "x-request-id"
    ]
    too_long = _feedback(two_keys, "key-attacker", {"request_id": rid, "correction": "x" * 70_000})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "correction"
    comment = _feedback(
        two_keys, "key-attacker", {"request_id": rid, "score": 1, "comment": "c" * 5000}
    )
    assert comment.status_code == 400 and comment.json()["error"]["param"] == "comment"
    huge = httpx.post(
        two_keys.base_url + "/feedback",
        headers={"Authorization": "Bearer key-attacker", "content-type": "application/json"},
        content=b'{"request_id": "' + rid.encode() + b'", "comment": "' + b"y" * 7_000_000 + b'"}',
    )
    assert huge.status_code == 413
    statuses = [
        _feedback(two_keys, "key-attacker", {"request_id": rid, "score": 1}).status_code
        for _ in range(4)
    ]
    # 6 a minute: the chat, the three refused above, one or two more; then 429 (it was never
    # limited)
    assert statuses[0] == 200 and statuses[-2:] == [429, 429], statuses
    assert not [r for r in _feedback_rows(two_keys) if r[2] == key_id("key-attacker")][4:]
