"""The wire side of a relayed call: families and labels, which headers cross each way, and
what a JSON answer says about its usage when it is read as it streams."""

from __future__ import annotations

import gzip
import json

import pytest

from understudy.gateway.config import GatewayConfig, PassthroughConfig
from understudy.gateway.serving.passthrough_wire import (
    HEAD_BYTES,
    BodyProbe,
    client_headers,
    family,
    path_label,
    teacher_headers,
    usage_tokens,
)


@pytest.mark.parametrize(
    ("path", "label", "fam"),
    [
        ("/v1/embeddings", "/v1/embeddings", "embeddings"),
        ("/v1/files/file-abc123/content", "/v1/files/{id}/content", "files"),
        ("/v1/files/plainword", "/v1/files/{id}", "files"),
        ("/v1/models/gpt-4o-mini", "/v1/models/{id}", "models"),
        ("/v1/models/ft:gpt-4o:org:x:1", "/v1/models/{id}", "models"),
        (
            "/v1/vector_stores/vs_1/files/file-2",
            "/v1/vector_stores/{id}/files/{id}",
            "vector_stores",
        ),
        ("/v1/fine_tuning/jobs/ftjob-1/events", "/v1/fine_tuning/jobs/{id}/events", "fine_tuning"),
        ("/v1/batches/batch_9/cancel", "/v1/batches/{id}/cancel", "batches"),
        ("/v1/threads/runs", "/v1/threads/runs", "threads"),
        ("/v1/audio/speech", "/v1/audio/speech", "audio"),
        ("/v1/Weird-1", "/v1/{id}", "other"),
    ],
)
def test_labels_hide_ids_and_families_name_the_endpoint(path: str, label: str, fam: str) -> None:
    assert path_label(path) == label
    assert family(path) == fam


def test_headers_to_the_teacher_drop_the_gateways_and_hop_by_hop_ones() -> None:
    sent = teacher_headers(
        [
            ("host", "gw:8000"),
            ("authorization", "Bearer client"),
            ("x-understudy-api-key", "gateway-secret"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("cookie", "a=b"),
            ("content-type", "multipart/form-data; boundary=x"),
            ("content-length", "12"),
            ("openai-organization", "org-1"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
        ]
    )
    assert dict(sent) == {
        "content-type": "multipart/form-data; boundary=x",
        "content-length": "12",
        "openai-organization": "org-1",
        "accept-encoding": "gzip, deflate",  # only what the gateway can read for usage
    }
    assert dict(teacher_headers([("accept-encoding", "br")]))["accept-encoding"] == "identity"


def test_headers_to_the_client_drop_cookies_hop_by_hop_and_the_teachers_request_id() -> None:
    kept = client_headers(
        [
            ("Set-Cookie", "__cf=1"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("x-request-id", "req_teacher"),
            ("Content-Type", "audio/mpeg"),
            ("Content-Length", "10"),
            ("openai-processing-ms", "12"),
            ("x-ratelimit-remaining-requests", "99"),
        ]
    )
    assert kept == [
        ("content-length", "10"),
        ("openai-processing-ms", "12"),
        ("x-ratelimit-remaining-requests", "99"),
    ]


def _fed(data: bytes, encoding: str | None = None, step: int = 1000) -> BodyProbe:
    probe = BodyProbe(keep=0, encoding=encoding)
    for at in range(0, len(data), step):
        probe.feed(data[at : at + step])
    return probe


def test_usage_of_a_small_answer_and_of_a_gzipped_one() -> None:
    answer = json.dumps(
        {"data": [], "model": "text-embedding-3-small", "usage": {"prompt_tokens": 7}}
    ).encode()
    assert _fed(answer).model_and_usage() == ("text-embedding-3-small", {"prompt_tokens": 7})
    zipped = _fed(gzip.compress(answer), "gzip", step=7)
    assert zipped.model_and_usage() == ("text-embedding-3-small", {"prompt_tokens": 7})
    assert _fed(answer, "br").model_and_usage() == (None, None)  # not readable: no usage


def test_usage_of_an_answer_larger_than_the_head_comes_from_its_tail() -> None:
    vectors = [{"embedding": [0.123456789] * 512, "index": i} for i in range(300)]
    answer = json.dumps(
        {"data": vectors, "model": "m-1", "usage": {"prompt_tokens": 300, "total_tokens": 300}}
    ).encode()
    assert len(answer) > HEAD_BYTES
    probe = _fed(gzip.compress(answer), "gzip", step=65536)
    assert probe.size == len(answer)
    assert probe.model_and_usage() == ("m-1", {"prompt_tokens": 300, "total_tokens": 300})
    assert probe.parsed() is None and probe.kept is None  # never held whole


def test_kept_only_when_small_enough() -> None:
    body = b'{"input": "x", "model": "m"}'
    small = BodyProbe(keep=len(body))
    small.feed(body)
    assert small.kept == body.decode()
    over = BodyProbe(keep=len(body) - 1)
    over.feed(body)
    assert over.kept is None


def test_usage_in_either_naming() -> None:
    assert usage_tokens({"prompt_tokens": 5, "total_tokens": 5}) == (5, None, 5)
    assert usage_tokens({"input_tokens": 3, "output_tokens": 4}) == (3, 4, 7)
    assert usage_tokens({"type": "duration", "seconds": 3}) == (None, None, None)


def test_settings_refuse_prefixes_outside_v1_and_deny_wins() -> None:
    config = PassthroughConfig(deny=["/v1/fine_tuning"])
    assert config.refuses("/v1/fine_tuning/jobs")
    assert not config.refuses("/v1/embeddings")
    assert PassthroughConfig(allow=["/v1/embeddings"]).refuses("/v1/files")
    with pytest.raises(ValueError, match=r"passthrough\.deny"):
        GatewayConfig(passthrough=PassthroughConfig(deny=["fine_tuning"])).validate()
    with pytest.raises(ValueError, match=r"passthrough\.max_body_bytes"):
        GatewayConfig(passthrough=PassthroughConfig(max_body_bytes=0)).validate()
