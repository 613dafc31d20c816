"""Access hardening against a determined client and a careless operator: failed key checks
throttled and logged, the client address from the connection, /ready cached, dashboard
sessions that end, a dashboard closed by default once keys are set, and a gateway that
refuses to listen openly on a public address."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import TEACHER_KEY, gateway_env
from tests.gateway_process import ROOT, GatewayProcess, free_port

CHAT = [{"role": "user", "content": "What is 2+2?"}]
ADMIN_KEY = "sk-admin-access-71c2e0"
CLIENT_KEY = "sk-gw-access-5a1f93"


@pytest.fixture(scope="module")
def keyed(stub, tmp_path_factory):
    env = gateway_env(
        UNDERSTUDY_API_KEYS=CLIENT_KEY,
        UNDERSTUDY_ADMIN_KEY=ADMIN_KEY,
        UNDERSTUDY_STUDENT_BACKEND="none",
        UNDERSTUDY_LIMITS_FAILED_AUTH_PER_MINUTE="5",
    )
    with GatewayProcess(stub.base_url, tmp_path_factory.mktemp("acc") / "data", env=env) as gw:
        yield gw


def test_dashboard_sessions_are_random_expire_and_end_on_sign_out(keyed, teacher):
    """The cookie was HMAC(admin key, constant): the same for every sign-in, valid forever
    and after sign-out, and an offline oracle for the key."""
    cookies = []
    for _ in range(2):
        login = httpx.post(keyed.url + "/dashboard/login", data={"key": ADMIN_KEY})
        assert login.status_code == 303
        cookies.append(login.cookies["understudy_dashboard"])
        assert "Max-Age=43200" in login.headers["set-cookie"]  # 12 hours
    assert cookies[0] != cookies[1] and len(cookies[0]) >= 40
    for cookie in cookies:
        page = httpx.get(keyed.url + "/dashboard", cookies={"understudy_dashboard": cookie})
        assert page.status_code == 200
    out = httpx.post(keyed.url + "/dashboard/logout", cookies={"understudy_dashboard": cookies[0]})
    assert out.status_code == 303
    stolen = httpx.get(keyed.url + "/dashboard", cookies={"understudy_dashboard": cookies[0]})
    assert stolen.status_code == 401  # revoked on the gateway, not only in the browser
    other = httpx.get(keyed.url + "/dashboard", cookies={"understudy_dashboard": cookies[1]})
    assert other.status_code == 200
    rollback = httpx.post(
        keyed.url + "/dashboard/rollback/intent",
        cookies={"understudy_dashboard": cookies[0]},
        headers={"x-understudy-dashboard": "1"},
    )
    assert rollback.status_code == 401


def test_ready_is_cached_so_anonymous_calls_do_not_reach_the_teacher(keyed, teacher):
    """It made one teacher /models call and one write per call (2,480 in 10 s)."""
    teacher.requests.clear()
    with httpx.Client() as client:
        for _ in range(40):
            assert client.get(keyed.url + "/ready").status_code == 200
    models = [r for r in teacher.requests if r["path"] == "/v1/models"]
    assert 1 <= len(models) <= 3, len(models)


def test_failed_key_checks_are_throttled_per_address_and_logged_without_the_key(keyed, teacher):
    """7,081 wrong admin keys in 5 s were all 401 and logged nowhere."""
    wrong = "sk-admin-WRONG-guess-00"
    statuses = []
    for i in range(8):
        r = httpx.get(keyed.url + "/admin/tasks", headers={"Authorization": f"Bearer {wrong}{i}"})
        statuses.append(r.status_code)
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
    throttled = httpx.get(keyed.url + "/admin/tasks", headers={"Authorization": "Bearer x"})
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert throttled.json()["error"]["type"] == "rate_limit_error" or throttled.json()["error"]
    # The address is throttled for every key check, right key or not, on every path.
    c = openai.OpenAI(base_url=keyed.base_url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="m", messages=CHAT)
    login = httpx.post(keyed.url + "/dashboard/login", data={"key": ADMIN_KEY})
    assert login.status_code == 429
    log = keyed.output()
    lines = [line for line in log.splitlines() if "failed authentication from 127.0.0.1" in line]
    assert len(lines) == 5 and "/admin/tasks" in lines[0]  # one line each, then one notice
    assert wrong not in log


def test_wrong_gateway_keys_are_throttled_too(stub, teacher, tmp_path):
    env = gateway_env(UNDERSTUDY_API_KEYS=CLIENT_KEY, UNDERSTUDY_LIMITS_FAILED_AUTH_PER_MINUTE="3")
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:
        statuses = [
            httpx.request(
                method,
                gw.base_url + path,
                headers={"Authorization": "Bearer sk-wrong"},
                json={"model": "m", "messages": CHAT, "input": "x"},
            ).status_code
            for method, path in (
                ("POST", "/chat/completions"),
                ("POST", "/embeddings"),
                ("POST", "/responses"),
                ("POST", "/feedback"),
                ("GET", "/models"),
            )
        ]
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429], statuses
    assert not [r for r in teacher.requests if r["path"] != "/v1/models"]


def test_x_forwarded_for_does_not_choose_the_client_address(stub, teacher, tmp_path):
    """Without keys the rate limit is per address; from loopback, uvicorn's default proxy
    headers let each request name its own address and bypass it."""
    env = gateway_env(UNDERSTUDY_LIMITS_REQUESTS_PER_MINUTE="3", UNDERSTUDY_STUDENT_BACKEND="none")
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:
        statuses = [
            httpx.post(
                gw.base_url + "/chat/completions",
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
                json={"model": "m", "messages": CHAT},
            ).status_code
            for i in range(6)
        ]
    assert statuses == [200, 200, 200, 429, 429, 429], statuses


def test_trusted_proxies_make_x_forwarded_for_the_client_address(stub, teacher, tmp_path):
    env = gateway_env(
        UNDERSTUDY_LIMITS_REQUESTS_PER_MINUTE="1",
        UNDERSTUDY_STUDENT_BACKEND="none",
        UNDERSTUDY_TRUSTED_PROXIES="127.0.0.1",
    )
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:
        statuses = [
            httpx.post(
                gw.base_url + "/chat/completions",
                headers={"X-Forwarded-For": address},
                json={"model": "m", "messages": CHAT},
            ).status_code
            for address in ("203.0.113.1", "203.0.113.2", "203.0.113.1")
        ]
    assert statuses == [200, 200, 429], statuses


def test_without_admin_key_the_dashboard_is_closed_once_client_keys_are_set(stub, tmp_path):
    """It showed task names, spend and agreement to anyone."""
    env = gateway_env(UNDERSTUDY_API_KEYS=CLIENT_KEY, UNDERSTUDY_STUDENT_BACKEND="none")
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:
        for headers in ({}, {"Authorization": f"Bearer {CLIENT_KEY}"}):
            page = httpx.get(gw.url + "/dashboard", headers=headers)
            assert page.status_code == 403 and "admin_key" in page.text
            assert "Savings" not in page.text
        assert httpx.post(gw.url + "/dashboard/login", data={"key": ""}).status_code == 401


def _serve(tmp_path, *env_pairs: str, host: str = "0.0.0.0") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "UNDERSTUDY_TEACHER_API_KEY": TEACHER_KEY}
    env.update(dict(pair.split("=", 1) for pair in env_pairs))
    port = str(free_port())
    cmd = [sys.executable, "-m", "understudy.cli", "serve", "--host", host, "--port", port]
    cmd += ["--data-dir", str(tmp_path / "data"), "--teacher-url", "http://127.0.0.1:9/v1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(port))) == 0:
                break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.terminate()
    _, err = proc.communicate(timeout=20)
    return subprocess.CompletedProcess(cmd, proc.returncode, "", err)


@pytest.mark.sqlite_only("starts `understudy serve` itself, on its data directory's file")
def test_a_public_address_without_keys_is_refused_unless_allow_open(tmp_path):
    """The Docker image listened on 0.0.0.0 with no keys: an open relay on the teacher key."""
    refused = _serve(tmp_path)
    assert refused.returncode == 3 and "refusing to serve on 0.0.0.0" in refused.stderr
    assert "allow_open" in refused.stderr
    pass_through = _serve(tmp_path, "UNDERSTUDY_TEACHER_PASS_THROUGH_AUTH=true")
    assert pass_through.returncode == 3 and "admin_key" in pass_through.stderr
    for env in (("UNDERSTUDY_ALLOW_OPEN=true",), (f"UNDERSTUDY_API_KEYS={CLIENT_KEY}",)):
        started = _serve(tmp_path, *env)
        assert "refusing" not in started.stderr and "ready" in started.stderr, started.stderr
    loopback = _serve(tmp_path, host="127.0.0.1")
    assert "refusing" not in loopback.stderr and "ready" in loopback.stderr
