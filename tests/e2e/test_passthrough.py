"""Every other path under /v1: relayed to the teacher as it comes, metered, never distilled.

The real gateway process, the stand-in teacher and the official ``openai`` SDK (sync and
async). Each call is checked for what the client gets and what the log holds: a metadata row
(endpoint family, method, path label, status, bytes, usage and cost), never a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import websockets.exceptions
import websockets.sync.client

from tests.e2e.conftest import TEACHER_KEY, gateway_env
from tests.gateway_process import ROOT, GatewayProcess
from tests.stub_passthrough import EMBEDDING_DIMENSIONS, embedding, speech_bytes
from tests.teacher_stub import StubTeacher
from understudy.storage.distill_queries import iter_log_rows, tasks_with_teacher_answers

EMBEDDING_MODEL = "text-embedding-3-small"
EMBEDDING_PRICE = 0.02  # USD per 1M tokens, the built-in table's


@pytest.fixture(scope="module")
def relay(stub: StubTeacher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("relay") / "data"
    config = '[passthrough]\ndeny = ["/v1/fine_tuning"]\n'
    with GatewayProcess(stub.base_url, data, env=gateway_env(), config=config) as gw:
        yield gw


def client(gw: GatewayProcess, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="sk-client", max_retries=0, **kw)


def assert_metadata_row(row: dict, endpoint: str, method: str, label: str, status: int) -> None:
    assert row["served_by"] == "passthrough"
    assert row["endpoint"] == endpoint
    assert row["http_method"] == method
    assert row["path_label"] == label
    assert row["http_status"] == status
    assert row["status"] == ("ok" if status < 400 else "error")
    assert row["task"] == ""
    assert row["request_json"] == "" and row["response_json"] is None  # no body stored
    assert row["latency_ms"] > 0


def test_the_calls_that_were_404_now_answer(relay: GatewayProcess, teacher: StubTeacher) -> None:
    c = client(relay)
    assert len(c.embeddings.create(model=EMBEDDING_MODEL, input="hi there").data) == 1
    assert c.moderations.create(input="a kind word").results[0].flagged is False
    assert c.models.retrieve(teacher.model).id == teacher.model
    assert isinstance(c.files.list().data, list)


def test_embeddings_float_and_base64(relay: GatewayProcess, teacher: StubTeacher) -> None:
    c = client(relay)
    texts = ["the cat sat", "on the mat"]
    raw = c.embeddings.with_raw_response.create(
        model=EMBEDDING_MODEL, input=texts, encoding_format="float"
    )
    floats = raw.parse()
    assert [d.embedding for d in floats.data] == [embedding(t, EMBEDDING_DIMENSIONS) for t in texts]
    assert floats.usage.prompt_tokens == 6
    # The SDK's default asks for base64 and decodes it; the vectors are the same.
    b64 = c.embeddings.create(model=EMBEDDING_MODEL, input=texts, dimensions=4)
    assert [d.embedding for d in b64.data] == [embedding(t, 4) for t in texts]
    assert teacher.bodies("/v1/embeddings")[-1]["encoding_format"] == "base64"

    row = relay.row(raw.http_response.headers["x-request-id"])
    assert_metadata_row(row, "embeddings", "POST", "/v1/embeddings", 200)
    assert row["requested_model"] == row["teacher_model"] == EMBEDDING_MODEL
    assert (row["prompt_tokens"], row["total_tokens"]) == (6, 6)
    assert row["teacher_cost_usd"] == pytest.approx(6 * EMBEDDING_PRICE / 1e6)
    assert row["bytes_out"] == len(raw.http_response.content)
    assert row["bytes_in"] == len(raw.http_request.content)
    # The teacher got the gateway's key, never the client's.
    assert teacher.requests[-1]["headers"]["authorization"] == f"Bearer {TEACHER_KEY}"


async def test_async_client_moderations_models_files(
    relay: GatewayProcess, teacher: StubTeacher
) -> None:
    async with openai.AsyncOpenAI(base_url=relay.base_url, api_key="k", max_retries=0) as c:
        flagged, models, files, vectors = await asyncio.gather(
            c.moderations.create(input=["I will kill it", "tea"]),
            c.models.with_raw_response.retrieve(teacher.model),
            c.files.list(purpose="batch"),
            c.embeddings.create(model=EMBEDDING_MODEL, input="async words"),
        )
    assert [r.flagged for r in flagged.results] == [True, False]
    assert models.parse().id == teacher.model
    assert files.object == "list"
    assert vectors.data[0].embedding == embedding("async words", EMBEDDING_DIMENSIONS)
    listed = [r for r in teacher.requests if r["path"] == "/v1/files" and r["method"] == "GET"]
    assert listed[-1]["query"] == "purpose=batch"  # the query string travels
    row = relay.row(models.http_response.headers["x-request-id"])
    assert_metadata_row(row, "models", "GET", "/v1/models/{id}", 200)
    rows = relay.wait_rows("path_label = '/v1/moderations'")
    assert rows and rows[-1]["teacher_model"] == "omni-moderation-latest"


def test_files_multipart_list_retrieve_content_delete_and_batches(
    relay: GatewayProcess, teacher: StubTeacher
) -> None:
    c = client(relay)
    content = b"".join(
        json.dumps({"custom_id": str(i), "body": {"n": i}}).encode() + b"\n" for i in range(500)
    )
    uploaded = c.files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        len(content),
        "input.jsonl",
        "batch",
    )
    assert teacher.passthrough.uploads[uploaded.id].sha256 == hashlib.sha256(content).hexdigest()
    assert uploaded.id in [f.id for f in c.files.list().data]
    assert c.files.retrieve(uploaded.id).bytes == len(content)
    assert c.files.content(uploaded.id).content == content

    batch = c.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert c.batches.retrieve(batch.id).input_file_id == uploaded.id
    assert batch.id in [b.id for b in c.batches.list().data]
    assert c.batches.cancel(batch.id).status == "cancelling"
    deleted = c.files.with_raw_response.delete(uploaded.id)
    assert deleted.parse().deleted is True

    relay.row(deleted.http_response.headers["x-request-id"])  # the last call's row is written
    rows = relay.rows("path_label like '/v1/files%' or path_label like '/v1/batches%'")
    labels = {(r["http_method"], r["path_label"]) for r in rows}
    assert {
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/{id}"),
        ("GET", "/v1/files/{id}/content"),
        ("DELETE", "/v1/files/{id}"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches/{id}"),
        ("POST", "/v1/batches/{id}/cancel"),
    } <= labels
    upload_row = next(r for r in rows if r["http_method"] == "POST" and r["endpoint"] == "files")
    assert upload_row["bytes_in"] > len(content)  # the multipart body, as it was relayed
    content_row = next(r for r in rows if r["path_label"] == "/v1/files/{id}/content")
    assert content_row["bytes_out"] == len(content)
    assert all(r["request_json"] == "" and r["response_json"] is None for r in rows)
    assert not any(uploaded.id in (r["path_label"] or "") for r in rows)


def test_audio_speech_is_streamed_binary_and_transcription_multipart(
    relay: GatewayProcess, teacher: StubTeacher
) -> None:
    c = client(relay)
    text = "hello there from the relayed speech endpoint"
    with c.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        audio = b"".join(response.iter_bytes())
        rid = response.headers["x-request-id"]
    assert audio == speech_bytes(text)
    row = relay.row(rid)
    assert_metadata_row(row, "audio", "POST", "/v1/audio/speech", 200)
    assert row["bytes_out"] == len(audio)
    assert row["requested_model"] == "tts-1"

    heard = c.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("clip.mp3", io.BytesIO(audio))
    )
    assert heard.text == f"{len(audio)} bytes of audio"
    rows = relay.wait_rows("path_label = '/v1/audio/transcriptions'")
    assert rows[-1]["prompt_tokens"] == len(audio) // 100  # usage in input_tokens naming


def test_teacher_errors_pass_through_and_only_safe_calls_are_retried(
    relay: GatewayProcess, teacher: StubTeacher
) -> None:
    c = client(relay)
    with pytest.raises(openai.NotFoundError) as missing:
        c.files.retrieve("file-missing")
    assert missing.value.body["message"] == "No such File object: file-missing"
    row = relay.row(missing.value.response.headers["x-request-id"])
    assert_metadata_row(row, "files", "GET", "/v1/files/{id}", 404)
    assert row["error"] == "teacher HTTP 404: No such File object: file-missing"

    teacher.requests.clear()
    with pytest.raises(openai.InternalServerError):
        c.embeddings.create(model=EMBEDDING_MODEL, input="x", extra_headers={"x-stub-fail": "500"})
    assert len(teacher.requests) == 1  # a POST is never repeated

    teacher.requests.clear()
    with pytest.raises(openai.InternalServerError) as busy:
        c.files.list(extra_headers={"x-stub-fail": "503"})
    assert busy.value.status_code == 503
    assert len(teacher.requests) == 3  # a GET is retried (teacher.max_retries = 2), then passed

    # An answer that breaks off before its announced length is a 502, not a short body.
    with pytest.raises(openai.InternalServerError) as cut:
        c.models.retrieve(teacher.model, extra_headers={"x-stub-fail": "cut:10"})
    assert cut.value.status_code == 502
    assert cut.value.body["code"] == "teacher_unavailable"
    assert relay.row(cut.value.response.headers["x-request-id"])["status"] == "cut"


def test_denied_prefix_realtime_and_unknown_paths(
    relay: GatewayProcess, teacher: StubTeacher
) -> None:
    c = client(relay)
    teacher.requests.clear()
    with pytest.raises(openai.PermissionDeniedError) as denied:
        c.fine_tuning.jobs.list()
    assert denied.value.body["code"] == "permission_denied"
    assert "passthrough.deny" in denied.value.body["message"]
    encoded = httpx.post(relay.base_url + "/fine%5Ftuning/jobs", json={})
    assert encoded.status_code == 403
    assert teacher.requests == []

    http = httpx.get(relay.base_url + "/realtime", params={"model": "gpt-realtime"})
    assert http.status_code == 400
    assert http.json()["error"]["code"] == "unsupported_endpoint"
    ws_url = relay.base_url.replace("http://", "ws://") + "/realtime?model=gpt-realtime"
    with websockets.sync.client.connect(ws_url) as ws:
        event = json.loads(ws.recv(timeout=5))
        assert event["type"] == "error"
        assert event["error"]["code"] == "unsupported_endpoint"
        assert "not proxied" in event["error"]["message"]
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    # Owned paths keep their answers; other paths are still unknown.
    wrong = httpx.get(relay.base_url + "/chat/completions")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert httpx.get(relay.url + "/v2/embeddings").status_code == 404
    assert teacher.requests == []


@pytest.fixture(scope="module")
def small(stub: StubTeacher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Chat takes 4 KiB, the relay 64 KiB, and JSON bodies up to 4 KiB are stored."""
    data = tmp_path_factory.mktemp("small") / "data"
    config = (
        'max_body_bytes = 4096\nadmin_key = "admin-secret"\n'
        "[passthrough]\nmax_body_bytes = 65536\nstore_json_bodies = true\nstore_max_bytes = 4096\n"
    )
    with GatewayProcess(stub.base_url, data, env=gateway_env(), config=config) as gw:
        yield gw


def test_relay_has_its_own_body_limit(small: GatewayProcess, teacher: StubTeacher) -> None:
    c = client(small)
    twenty_kib = io.BytesIO(b"x" * 20_000)
    assert c.files.create(file=("a.jsonl", twenty_kib), purpose="batch").bytes == 20_000
    with pytest.raises(openai.APIStatusError) as too_big:
        c.files.create(file=("b.jsonl", io.BytesIO(b"x" * 70_000)), purpose="batch")
    assert too_big.value.status_code == 413
    assert too_big.value.body["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it streams
        for _ in range(20):
            yield b"y" * 8192

    streamed = httpx.post(
        small.base_url + "/embeddings", content=chunks(), headers={"content-type": "text/plain"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "request_too_large"

    # Chat keeps its own limit.
    big_chat = {"model": "m", "messages": [{"role": "user", "content": "z" * 5000}]}
    assert httpx.post(small.base_url + "/chat/completions", json=big_chat).status_code == 413


def test_store_json_bodies_keeps_small_ones_and_they_never_train(
    small: GatewayProcess, teacher: StubTeacher
) -> None:
    c = client(small)
    raw = c.embeddings.with_raw_response.create(
        model=EMBEDDING_MODEL, input="stored words", encoding_format="float"
    )
    row = small.row(raw.http_response.headers["x-request-id"])
    assert json.loads(row["request_json"])["input"] == "stored words"
    assert json.loads(row["response_json"])["usage"]["prompt_tokens"] == 2
    many = [f"text number {i}" for i in range(100)]  # an answer over store_max_bytes
    big = c.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=many)
    big_row = small.row(big.http_response.headers["x-request-id"])
    assert big_row["response_json"] is None and big_row["total_tokens"] == 300

    with small.database() as db:
        assert "" not in tasks_with_teacher_answers(db)
        assert list(iter_log_rows(db, "")) == []


def test_report_metrics_and_dashboard_show_the_family(
    small: GatewayProcess, teacher: StubTeacher
) -> None:
    c = client(small)
    c.embeddings.create(model=EMBEDDING_MODEL, input="one two three four")
    c.files.list()
    small.wait_rows("path_label = '/v1/files' and http_method = 'GET'")
    metrics = httpx.get(small.url + "/metrics").text
    assert (
        'understudy_passthrough_requests_total{code="200",endpoint="embeddings",method="POST"}'
        in metrics
    )
    assert 'understudy_passthrough_tokens_total{endpoint="embeddings"}' in metrics
    report = subprocess.run(
        [sys.executable, "-m", "understudy.cli", "report", "--data-dir", str(small.data_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"} | small.storage_env,
        check=True,
    ).stdout
    line = next(x for x in report.splitlines() if x.startswith("embeddings"))
    assert "passed through" in report and "files" in report
    assert line.split()[1] != "0"
    # Relayed calls are not requests of a task: no student coverage is diluted by them.
    assert "no requests in this window" in report
    page = httpx.get(small.url + "/dashboard", headers={"authorization": "Bearer admin-secret"})
    assert page.status_code == 200
    section = page.text.split('id="passthrough"', 1)[1].split("</table>", 1)[0]
    assert ">embeddings</td>" in section and ">files</td>" in section


def test_gateway_key_rate_limit_and_budget_apply(
    stub: StubTeacher, teacher: StubTeacher, tmp_path: Path
) -> None:
    config = (
        'api_keys = ["gw-key"]\n[limits]\nrequests_per_minute = 60\nburst = 3\nmonthly_tokens = 5\n'
    )
    with GatewayProcess(stub.base_url, tmp_path / "data", env=gateway_env(), config=config) as gw:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.base_url, api_key="wrong", max_retries=0).models.retrieve(
                teacher.model
            )
        c = openai.OpenAI(base_url=gw.base_url, api_key="gw-key", max_retries=0)
        c.embeddings.create(model=EMBEDDING_MODEL, input="six words that cross the budget")
        gw.wait_rows("path_label = '/v1/embeddings'")
        with pytest.raises(openai.RateLimitError) as spent:
            c.embeddings.create(model=EMBEDDING_MODEL, input="more")
        assert spent.value.body["code"] == "insufficient_quota"
    with GatewayProcess(
        stub.base_url,
        tmp_path / "data2",
        env=gateway_env(),
        config="[limits]\nrequests_per_minute = 60\nburst = 2\n",
    ) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)
        c.files.list()
        c.files.list()
        with pytest.raises(openai.RateLimitError) as limited:
            c.files.list()
        assert limited.value.body["code"] == "rate_limit_exceeded"
        assert limited.value.response.headers["retry-after"]
