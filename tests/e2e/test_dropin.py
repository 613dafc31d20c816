"""The one-line switch: an app that uses chat, the Responses API and embeddings through one
client changes only its ``base_url``, and every call answers as the teacher's would.

Before the pass-through and the Responses routes, ``responses.create`` and ``embeddings.create``
through the gateway were 404 "Unknown request URL".
"""

from __future__ import annotations

import openai

from tests.gateway_process import GatewayProcess
from tests.teacher_stub import StubTeacher


def test_one_client_uses_chat_responses_and_embeddings(
    gateway: GatewayProcess, teacher: StubTeacher
) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-app", max_retries=0)

    chat = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is 2+2?"}]
    )
    assert chat.parse().choices[0].message.content == "4"

    response = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="Name a colour."
    )
    assert response.parse().output_text == "blue"

    vectors = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["card arrival", "lost card"]
    )
    assert [d.index for d in vectors.parse().data] == [0, 1]
    assert all(len(d.embedding) > 0 for d in vectors.parse().data)

    ids = [r.headers["x-request-id"] for r in (chat, response, vectors)]
    rows = {row["id"]: row for row in gateway.wait_rows("id in (?, ?, ?)", tuple(ids), count=3)}
    assert [rows[i]["endpoint"] for i in ids] == ["chat.completions", "responses", "embeddings"]
    assert [rows[i]["served_by"] for i in ids] == ["teacher", "teacher", "passthrough"]
    assert all(rows[i]["status"] == "ok" for i in ids)
    # chat and Responses exchanges are logged whole, for training; the relayed call is metered
    assert rows[ids[0]]["response_json"] and rows[ids[1]]["response_json"]
    assert rows[ids[2]]["response_json"] is None and rows[ids[2]]["prompt_tokens"] > 0
