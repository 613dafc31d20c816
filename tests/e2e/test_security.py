"""Security: admin endpoints, secrets never written, rate limits and budgets, confined paths.

Most tests share one locked-down gateway (gateway keys, admin key, a rate limit, debug logging,
vLLM students from a stand-in server, some with paths outside the data directory); the last
test greps everything that gateway wrote or sent for the keys used along the way.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import TEACHER_KEY, gateway_env
from tests.gateway_process import GatewayProcess, database_address
from tests.student.fake_vllm import BASE_MODEL, FakeVLLM
from understudy.gateway.api.auth import key_id
from understudy.gateway.app import create_app
from understudy.settings import load_settings
from understudy.storage.database import open_database
from understudy.storage.registry import promote, register_model
from understudy.storage.request_log import write_rows

CHAT = [{"role": "user", "content": "What is 2+2?"}]
STORY = [{"role": "user", "content": "Tell me a story."}]
KEY_A, KEY_B, KEY_C = "sk-gw-alpha-5d1e77", "sk-gw-beta-88c2f1", "sk-gw-gamma-c4e019"
ADMIN_KEY = "sk-admin-0b7f3a9e"
WRONG_KEY = "sk-gw-wrong-41aa0d"
USER_KEY = "sk-user-own-3c9d2b"
SECRETS = [TEACHER_KEY, KEY_A, KEY_B, KEY_C, ADMIN_KEY, WRONG_KEY, USER_KEY]
RPM = 20
CONFINED_TASKS = ("outside", "sneaky", "etc")


class Seen:
    """Every response body and header set a test received, for the final grep."""

    bodies: list[bytes] = []

    @classmethod
    def keep(cls, r: httpx.Response) -> httpx.Response:
        cls.bodies.append(r.content + json.dumps(dict(r.headers)).encode())
        return r


def _adapter(path: Path) -> str:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    return str(path)


@pytest.fixture(scope="module")
def vllm() -> Iterator[FakeVLLM]:
    server = FakeVLLM({"What is 2+2?": "4"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secured(stub, vllm, tmp_path_factory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("secured")
    data = root / "data"
    db = open_database(database_address(data))
    inside = _adapter(data / "models" / "inside" / "v1")
    outside = _adapter(root / "elsewhere" / "v1")
    sneaky = str(data / "models" / ".." / ".." / "elsewhere" / "v1")
    for task, path in (("inside", inside), ("outside", outside), ("sneaky", sneaky)):
        promote(db, register_model(db, task, base=BASE_MODEL, adapter_path=path).id)
    promote(db, register_model(db, "etc", base="/etc").id)
    db.conn.close()
    env = gateway_env(
        UNDERSTUDY_API_KEYS=f"{KEY_A},{KEY_B},{KEY_C}",
        UNDERSTUDY_ADMIN_KEY=ADMIN_KEY,
        UNDERSTUDY_LOG_LEVEL="debug",
        UNDERSTUDY_LIMITS_REQUESTS_PER_MINUTE=str(RPM),
        # Every admin path is tried with wrong keys from one address: logged, not throttled
        # (throttling has its own tests, tests/e2e/test_access.py).
        UNDERSTUDY_LIMITS_FAILED_AUTH_PER_MINUTE="0",
        UNDERSTUDY_STUDENT_BACKEND="vllm",
        UNDERSTUDY_STUDENT_VLLM_URL=vllm.base_url,
        UNDERSTUDY_STUDENT_RELOAD_INTERVAL_S="0.2",
        # the tests count the teacher's requests: no shadow or audit calls beside them
        UNDERSTUDY_ROUTER_SHADOW_RATE="0",
        UNDERSTUDY_ROUTER_AUDIT_RATE="0",
    )
    with GatewayProcess(stub.base_url, data, env=env) as gw:
        gw.inside_adapter = inside  # type: ignore[attr-defined]
        yield gw


SIGN_IN = ("/dashboard/login", "/dashboard/logout")  # public by design: they take the key


def admin_routes() -> list[tuple[str, str]]:
    """(method, path) of every admin API and dashboard endpoint the app has."""
    app = create_app(load_settings(env={}))
    out = []
    for route in app.routes:
        if not route.path.startswith(("/admin", "/dashboard")) or route.path in SIGN_IN:
            continue
        path = re.sub(r"\{[^}]+\}", "t", route.path)
        out += [(m, path) for m in sorted(route.methods) if m not in ("OPTIONS", "HEAD")]
    return out


def test_client_keys_cannot_reach_any_admin_endpoint(secured, teacher):
    routes = admin_routes()
    assert ("GET", "/admin/tasks") in routes and ("POST", "/admin/tasks/t/rollback") in routes
    for method, path in routes:
        for headers in (
            {},
            {"Authorization": f"Bearer {KEY_A}"},
            {"X-Understudy-Api-Key": KEY_A, "Authorization": f"Bearer {KEY_A}"},
            {"Authorization": f"Bearer {ADMIN_KEY}x"},
            {"Authorization": ADMIN_KEY},  # not a bearer token
        ):
            r = httpx.request(method, secured.url + path, headers=headers, json={"mode": "shadow"})
            assert r.status_code in (401, 403), (method, path, headers, r.text)
            if Seen.keep(r).headers["content-type"].startswith("application/json"):
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        if path.startswith("/admin") or method == "GET":
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            ok = httpx.request(method, secured.url + path, headers=admin, json={"mode": "routed"})
            assert Seen.keep(ok).status_code not in (401, 403), (method, path, ok.text)


def test_rate_limit_per_key_is_a_429_in_openai_shape(secured, teacher):
    c = openai.OpenAI(base_url=secured.base_url, api_key=KEY_C, max_retries=0)
    answered = 0
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(RPM + 1):
            c.completions.create(model="m", prompt="Say hello:")
            answered += 1
    assert answered == RPM  # the burst is one minute's worth
    refused = Seen.keep(info.value.response)
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "rate_limit_exceeded",
        "rate_limit_exceeded",
        None,
    )
    assert 1 <= int(refused.headers["retry-after"]) <= 60 / RPM + 1
    assert refused.headers["x-request-id"].startswith("req_")
    assert len(teacher.requests) == RPM  # refused requests never reach the teacher
    logged = {r["id"] for r in secured.wait_rows("api_key_id = ?", (key_id(KEY_C),), RPM)}
    assert len(logged) == RPM and refused.headers["x-request-id"] not in logged
    b = openai.OpenAI(base_url=secured.base_url, api_key=KEY_B, max_retries=0)
    assert b.chat.completions.create(model="m", messages=CHAT).choices  # its own bucket
    with pytest.raises(openai.AuthenticationError):  # a wrong key is a 401, not a 429
        openai.OpenAI(base_url=secured.base_url, api_key=WRONG_KEY, max_retries=0).models.list()
    assert all(httpx.get(secured.url + "/health").status_code == 200 for _ in range(RPM + 1))


def test_adapter_paths_outside_the_data_dir_are_never_loaded(secured, vllm, teacher):
    deadline = time.monotonic() + 10
    while "inside@v1" not in vllm.adapters and time.monotonic() < deadline:
        time.sleep(0.05)
    c = openai.OpenAI(base_url=secured.base_url, api_key=KEY_B, max_retries=0)
    for task in CONFINED_TASKS:
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=CHAT, extra_headers={"X-Understudy-Task": task}
        )
        assert raw.headers["x-understudy-served-by"] == "teacher"
    assert vllm.adapters == {"inside@v1": secured.inside_adapter}
    assert [b["lora_path"] for b in vllm.paths("/v1/load_lora_adapter")] == [secured.inside_adapter]
    output = secured.output()
    for task in CONFINED_TASKS:
        assert f"could not load {task}@v1" in output
    assert output.count("outside the data directory") >= len(CONFINED_TASKS)


def test_task_names_cannot_name_parent_directories(secured, teacher):
    c = openai.OpenAI(base_url=secured.base_url, api_key=KEY_B, max_retries=0)
    for name in ("..", ".", "../x", "a/b"):
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(
                model="m", messages=CHAT, extra_headers={"X-Understudy-Task": name}
            )
    assert not teacher.requests


def test_monthly_token_budget_counts_the_log_and_live_usage(stub, teacher, tmp_path):
    data = tmp_path / "data"
    db = open_database(database_address(data))
    spent = {  # KEY_A spent its budget before this start; the gateway reads that back
        "id": "req_earlier",
        "created_at": time.time() - 60,
        "endpoint": "chat.completions",
        "task": "t",
        "task_source": "header",
        "served_by": "teacher",
        "status": "ok",
        "request_json": "{}",
        "total_tokens": 500,
        "api_key_id": key_id(KEY_A),
    }
    write_rows(db, "requests", [spent])
    db.conn.close()
    env = gateway_env(
        UNDERSTUDY_API_KEYS=f"{KEY_A},{KEY_B}",
        UNDERSTUDY_STUDENT_BACKEND="none",
        UNDERSTUDY_LIMITS_MONTHLY_TOKENS="40",
    )
    with GatewayProcess(stub.base_url, data, env=env) as gw:
        a = openai.OpenAI(base_url=gw.base_url, api_key=KEY_A, max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            a.chat.completions.create(model="m", messages=CHAT)
        assert info.value.body["code"] == "insufficient_quota"
        assert info.value.body["type"] == "insufficient_quota"
        assert int(info.value.response.headers["retry-after"]) > 0
        b = openai.OpenAI(base_url=gw.base_url, api_key=KEY_B, max_retries=0)
        used = answered = 0
        while used < 40:  # answered until the budget is spent (the crossing request included)
            used += b.chat.completions.create(model="m", messages=STORY).usage.total_tokens
            answered += 1
        with pytest.raises(openai.RateLimitError):
            b.chat.completions.create(model="m", messages=CHAT)
        # Refused requests reach neither the teacher nor the log: the earlier row plus B's answers.
        gw.wait_rows(count=1 + answered)
        time.sleep(0.3)  # several commit intervals: a refused request's row would be there by now
        assert len(teacher.requests) == answered
        assert len(gw.rows()) == 1 + answered


def _written(gw: GatewayProcess) -> bytes:
    out = gw.stored_text().encode() + gw.output().encode()
    for path in gw.data_dir.rglob("*"):
        if path.is_file():
            out += path.read_bytes()
    return out


def _traffic(gw: GatewayProcess, teacher) -> None:
    """Every kind of exchange the gateway has, with keys in play."""
    keep = Seen.keep
    a = openai.OpenAI(base_url=gw.base_url, api_key=KEY_A, max_retries=0)
    b = openai.OpenAI(base_url=gw.base_url, api_key=KEY_B, max_retries=0)
    raw = a.chat.completions.with_raw_response.create(model="m", messages=CHAT)
    request_id = raw.headers["x-request-id"]
    chunks = b.chat.completions.create(model="m", messages=STORY, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    for fault in (401, 429, 400):
        teacher.control(fail_next=[fault])
        with pytest.raises(openai.APIStatusError) as info:
            a.chat.completions.create(model="m", messages=CHAT)
        keep(info.value.response)
    teacher.control(fail_next=[500, 500, 500])
    with pytest.raises(openai.InternalServerError) as info:
        a.chat.completions.create(model="m", messages=CHAT)
    keep(info.value.response)
    teacher.control(fail_next=["cut:2"])
    with pytest.raises(openai.APIError):
        list(a.chat.completions.create(model="m", messages=STORY, stream=True))
    base, auth_a = gw.base_url, {"Authorization": f"Bearer {KEY_A}"}
    keep(httpx.post(base + "/chat/completions", headers=auth_a, content=b"{not json"))
    keep(httpx.post(base + "/chat/completions", headers={"Authorization": f"Bearer {WRONG_KEY}"}))
    keep(httpx.get(base + "/models", headers=auth_a))
    feedback = {"request_id": request_id, "score": 1}
    keep(httpx.post(base + "/feedback", headers=auth_a, json=feedback))
    keep(httpx.get(gw.url + "/ready"))
    keep(httpx.get(gw.url + "/metrics"))


def test_concurrent_requests_cannot_all_start_on_the_same_unspent_budget(stub, teacher, tmp_path):
    """30 concurrent requests of 7 tokens on a 50-token budget were all answered (210 tokens)."""
    teacher.control(delay_ms=300)
    env = gateway_env(
        UNDERSTUDY_API_KEYS=KEY_A,
        UNDERSTUDY_STUDENT_BACKEND="none",
        UNDERSTUDY_LIMITS_MONTHLY_TOKENS="50",
        UNDERSTUDY_LIMITS_RESERVE_TOKENS="16",
    )
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:

        async def burst() -> list[int]:
            headers = {"Authorization": f"Bearer {KEY_A}"}
            body = {"model": "m", "messages": CHAT}
            async with httpx.AsyncClient(timeout=30) as client:
                calls = [
                    client.post(gw.base_url + "/chat/completions", headers=headers, json=body)
                    for _ in range(30)
                ]
                return [r.status_code for r in await asyncio.gather(*calls)]

        statuses = asyncio.run(burst())
        answered = statuses.count(200)
        used = sum(r["total_tokens"] for r in gw.wait_rows(count=answered))
    assert 1 <= answered <= 3 and statuses.count(429) == 30 - answered, statuses
    assert used < 50 + 8  # at most the crossing request beyond the budget


def test_a_client_that_leaves_streams_early_still_spends_its_token_budget(stub, teacher, tmp_path):
    """Reading 39 of 40 chunks and closing gave 8 x 200 on a 50-token budget: the rows were
    incomplete with no tokens, so the budget never moved."""
    teacher.control(chunk_delay_ms=30)
    env = gateway_env(
        UNDERSTUDY_API_KEYS=KEY_A,
        UNDERSTUDY_STUDENT_BACKEND="none",
        UNDERSTUDY_LIMITS_MONTHLY_TOKENS="50",
    )
    body = {"model": "m", "messages": STORY, "stream": True}
    statuses = []
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:
        for _ in range(8):
            with httpx.stream(
                "POST",
                gw.base_url + "/chat/completions",
                headers={"Authorization": f"Bearer {KEY_A}"},
                json=body,
            ) as r:
                statuses.append(r.status_code)
                for _ in zip(range(3), r.iter_lines(), strict=False):
                    pass  # a few events, then leave
            if r.status_code == 429:
                break
            time.sleep(0.3)  # the row is written once the gateway sees the client gone
        rows = gw.rows("status = 'incomplete'")
    assert statuses[-1] == 429 and len(statuses) <= 4, statuses
    assert rows and all(row["total_tokens"] for row in rows)


def test_pass_through_without_gateway_keys_no_credential_no_answer(stub, vllm, teacher, tmp_path):
    """The student answered a caller that carried no credential at all (200, served by the
    student) while the same request on a teacher-served task got the teacher's 401."""
    data = tmp_path / "data"
    db = open_database(database_address(data))
    adapter = _adapter(data / "models" / "own-key" / "v1")  # not the module gateway's adapter
    promote(db, register_model(db, "own-key", base=BASE_MODEL, adapter_path=adapter).id)
    db.conn.close()
    teacher.control(accept_keys=[USER_KEY])
    env = gateway_env(
        UNDERSTUDY_TEACHER_PASS_THROUGH_AUTH="true",
        UNDERSTUDY_STUDENT_BACKEND="vllm",
        UNDERSTUDY_STUDENT_VLLM_URL=vllm.base_url,
        UNDERSTUDY_STUDENT_RELOAD_INTERVAL_S="0.2",
        # no shadow or audit calls: they would reach the teacher off the response path, after
        # the requests this test counts
        UNDERSTUDY_ROUTER_SHADOW_RATE="0",
        UNDERSTUDY_ROUTER_AUDIT_RATE="0",
    )
    env.pop("UNDERSTUDY_TEACHER_API_KEY")
    task = {"X-Understudy-Task": "own-key"}
    body = {"model": "m", "messages": CHAT}
    with GatewayProcess(stub.base_url, data, env=env) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key=USER_KEY, max_retries=0)
        deadline, served = time.monotonic() + 10, "teacher"
        while served != "student" and time.monotonic() < deadline:  # the student is loaded
            raw = c.chat.completions.with_raw_response.create(
                model="m", messages=CHAT, extra_headers=task
            )
            served = raw.headers["x-understudy-served-by"]
        assert served == "student"
        checks = [r for r in teacher.requests if r["path"] == "/v1/models"]
        assert len(checks) == 1  # the teacher was asked once; its verdict is kept
        assert checks[0]["headers"]["authorization"] == f"Bearer {USER_KEY}"
        teacher.requests.clear()
        for path, payload in (
            ("/chat/completions", body),
            ("/responses", {"model": "m", "input": "What is 2+2?"}),
            ("/embeddings", {"model": "m", "input": "x"}),
        ):
            anonymous = httpx.post(gw.base_url + path, headers=task, json=payload)
            assert anonymous.status_code == 401, (path, anonymous.text)
            assert anonymous.json()["error"]["type"] == "invalid_request_error"
        assert httpx.get(gw.base_url + "/models").status_code == 401
        wrong = httpx.post(
            gw.base_url + "/chat/completions",
            headers={**task, "Authorization": f"Bearer {WRONG_KEY}"},
            json=body,
        )
        assert wrong.status_code == 401  # the teacher's own answer: the student never saw it
        assert wrong.headers.get("x-understudy-served-by") != "student"
        checks = [r["headers"]["authorization"] for r in teacher.requests]
        assert checks == [f"Bearer {WRONG_KEY}"] * 2  # its key check, then its request


def test_no_secret_reaches_the_log_the_database_errors_or_metrics(secured, teacher, tmp_path):
    _traffic(secured, teacher)
    assert len(secured.wait_rows(count=RPM + 8)) >= RPM + 8
    written = _written(secured)

    env = gateway_env(
        UNDERSTUDY_TEACHER_PASS_THROUGH_AUTH="true",
        UNDERSTUDY_LOG_LEVEL="debug",
        UNDERSTUDY_STUDENT_BACKEND="none",
        UNDERSTUDY_LIMITS_REQUESTS_PER_MINUTE="3",
    )
    env.pop("UNDERSTUDY_TEACHER_API_KEY")
    passing = GatewayProcess(stub_url(teacher), tmp_path / "data", env=env).start()
    try:
        user = openai.OpenAI(base_url=passing.base_url, api_key=USER_KEY, max_retries=0)
        user.chat.completions.create(model="m", messages=CHAT)
        assert teacher.requests[-1]["headers"]["authorization"] == f"Bearer {USER_KEY}"
        list(user.chat.completions.create(model="m", messages=STORY, stream=True))
        teacher.control(fail_next=[401])
        with pytest.raises(openai.AuthenticationError) as info:
            user.chat.completions.create(model="m", messages=CHAT)
        Seen.keep(info.value.response)
        with pytest.raises(openai.RateLimitError) as info:
            user.chat.completions.create(model="m", messages=CHAT)
        Seen.keep(info.value.response)
        Seen.keep(httpx.get(passing.url + "/metrics"))
        passing.wait_rows(count=3)
    finally:
        passing.stop()
    written += _written(passing)

    seen = b"".join(Seen.bodies)
    assert b"understudy_requests_total" in seen and b"chat.completions" in written
    assert b"insufficient_quota" not in seen and b"rate_limit_exceeded" in seen
    for secret in SECRETS:
        for needle in (secret.encode(), secret[-10:].encode()):  # the key, or its tail
            assert needle not in written, f"{needle!r} was written"
            assert needle not in seen, f"{needle!r} was sent back"


def stub_url(teacher) -> str:
    return teacher.base_url
