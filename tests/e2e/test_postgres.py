"""The gateway on PostgreSQL (``storage.url = "postgresql://..."``): requests through the
``openai`` SDK, every answer logged by the write-behind writer in batched transactions, the
log's counters and readiness as on SQLite, and nothing written to a SQLite file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from tests.e2e.conftest import gateway_env
from tests.e2e.scraped import scrape, value
from tests.gateway_process import GatewayProcess

REQUESTS = 90
QUESTIONS = ("What is 2+2?", "Name a colour.", "Tell me a story.")


def _ask(client: openai.OpenAI, i: int) -> tuple[str, str, str]:
    """(request id, question, answer text); every third request streams."""
    question = QUESTIONS[i % len(QUESTIONS)]
    messages = [{"role": "user", "content": question}]
    if i % 3 == 0:
        with client.chat.completions.with_streaming_response.create(
            model="m", messages=messages, stream=True, extra_headers={"x-understudy-task": "pg"}
        ) as resp:
            text = "".join(
                chunk.choices[0].delta.content or "" for chunk in resp.parse() if chunk.choices
            )
            return resp.headers["x-request-id"], question, text
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=messages, extra_headers={"x-understudy-task": "pg"}
    )
    return raw.headers["x-request-id"], question, raw.parse().choices[0].message.content or ""


def test_a_gateway_on_postgresql_logs_every_answer(stub, teacher, postgres_url, tmp_path):
    env = gateway_env(UNDERSTUDY_STORAGE_BATCH_SIZE="8")
    data = tmp_path / "data"
    with GatewayProcess(stub.base_url, data, env=env, storage_url=postgres_url) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: _ask(client, i), range(REQUESTS)))
        ids = {rid for rid, _, _ in answers}
        assert len(ids) == REQUESTS

        rows = gw.wait_rows("task = ?", ("pg",), count=REQUESTS, timeout=15)
        by_id = {r["id"]: r for r in rows}
        assert set(by_id) == ids
        for rid, question, text in answers:
            row = by_id[rid]
            assert row["status"] == "ok" and row["served_by"] == "teacher"
            assert question in row["request_json"]
            assert text and text in row["response_json"]

        # The Responses API reads its stored responses back from the same database.
        first = client.responses.create(model="m", input="What is 2+2?", store=True)
        assert client.responses.retrieve(first.id).id == first.id

        _, metrics = scrape(gw)
        assert (value(metrics, "understudy_log_written_rows_total") or 0) >= REQUESTS + 1
        assert value(metrics, "understudy_log_dropped_rows_total") == 0
        ready = httpx.get(gw.url + "/ready").json()["database"]
        assert ready["ok"] is True and ready["log_healthy"] is True
    assert not (data / "understudy.db").exists()  # the log went to PostgreSQL only
