"""Gateway keys, teacher keys and pass-through; secrets never stored."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import TEACHER_KEY, gateway_env
from tests.gateway_process import GatewayProcess

CHAT = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def locked(stub, tmp_path_factory):
    env = gateway_env(UNDERSTUDY_API_KEYS="gw-key-one,gw-key-two")
    with GatewayProcess(stub.base_url, tmp_path_factory.mktemp("a") / "data", env=env) as gw:
        yield gw


def test_missing_or_wrong_gateway_key_is_401(locked, teacher):
    for key in ("wrong-key", ""):
        c = openai.OpenAI(base_url=locked.base_url, api_key=key or "x", max_retries=0)
        if not key:
            c = openai.OpenAI(
                base_url=locked.base_url,
                api_key="x",
                max_retries=0,
                default_headers={"Authorization": ""},
            )
        with pytest.raises(openai.AuthenticationError) as info:
            c.chat.completions.create(model="m", messages=CHAT)
        assert info.value.body["code"] == "invalid_api_key"
    assert not teacher.requests and not locked.rows()


def test_valid_gateway_key_is_served_with_the_teacher_key(locked, teacher):
    c = openai.OpenAI(base_url=locked.base_url, api_key="gw-key-two", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=CHAT)
    assert raw.parse().choices[0].message.content == "4"
    assert teacher.requests[-1]["headers"]["authorization"] == f"Bearer {TEACHER_KEY}"
    row = locked.row(raw.headers["x-request-id"])
    assert row["api_key_id"].startswith("key_") and "gw-key" not in row["api_key_id"]
    assert httpx.get(locked.base_url + "/models").status_code == 401


def test_pass_through_forwards_the_clients_own_key(stub, teacher, tmp_path):
    env = gateway_env(UNDERSTUDY_TEACHER_PASS_THROUGH_AUTH="true", UNDERSTUDY_API_KEYS="gw-key")
    env.pop("UNDERSTUDY_TEACHER_API_KEY")
    with GatewayProcess(stub.base_url, tmp_path / "data", env=env) as gw:
        c = openai.OpenAI(
            base_url=gw.base_url,
            api_key="sk-user-own-key",
            max_retries=0,
            default_headers={"X-Understudy-Api-Key": "gw-key"},
        )
        assert c.chat.completions.create(model="m", messages=CHAT).choices[0].message.content
        assert teacher.requests[-1]["headers"]["authorization"] == "Bearer sk-user-own-key"
        no_gateway_key = openai.OpenAI(
            base_url=gw.base_url, api_key="sk-user-own-key", max_retries=0
        )
        with pytest.raises(openai.AuthenticationError):
            no_gateway_key.chat.completions.create(model="m", messages=CHAT)
        gw.stop()
        written = gw.stored_text().encode() + gw.output().encode()
        for path in gw.data_dir.rglob("*"):  # the SQLite file and its WAL, when there
            if path.is_file():
                written += path.read_bytes()
        assert b"sk-user-own-key" not in written and b"gw-key" not in written


def test_teacher_key_is_never_written(stub, teacher, tmp_path):
    with GatewayProcess(stub.base_url, tmp_path / "data", env=gateway_env()) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="m", messages=CHAT)
        list(c.chat.completions.create(model="m", messages=CHAT, stream=True))
        teacher.control(fail_next=[401])  # the gateway's teacher key refused: a 502
        with pytest.raises(openai.APIStatusError) as refused:
            c.chat.completions.create(model="m", messages=CHAT)
        assert refused.value.status_code == 502
        gw.stop()
        written = gw.stored_text().encode() + gw.output().encode()
        for path in gw.data_dir.rglob("*"):
            if path.is_file():
                written += path.read_bytes()
        assert len(gw.rows()) == 3
        assert TEACHER_KEY.encode() not in written
