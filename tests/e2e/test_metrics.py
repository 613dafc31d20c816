"""``/metrics`` after real traffic through a real gateway process, parsed with prometheus-client's
own parser; costs on the log rows match the counters."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import TEACHER_KEY, gateway_env
from tests.e2e.scraped import scrape, value
from tests.gateway_process import ROOT, GatewayProcess
from understudy.gateway.accounting.metrics_state import StudentCollector
from understudy.gateway.serving.pool import Slot, student_state
from understudy.gateway.serving.routing import build_router
from understudy.router.config import RouterConfig
from understudy.storage.database import open_database
from understudy.storage.distill_queries import insert_run
from understudy.storage.registry import ModelVersion
from understudy.student.base import StudentModel

CLIENT_KEY = "sk-client-METRICS-91ab"
GRAFANA = ROOT / "deploy" / "grafana" / "understudy.json"
# Exported only while a student serves (checked in test_student_state_metrics below).
STUDENT_SAMPLES = {
    "understudy_champion_info",
    "understudy_router_threshold",
    "understudy_quality_target",
    "understudy_live_agreement",
    "understudy_live_agreement_samples",
}
TASK = "billing"
# A price override: $1 per 1M prompt tokens, $4 per 1M completion tokens.
CONFIG = '[costs]\nprices = { "gpt-4o-mini" = "1/4" }\n'


@pytest.fixture(scope="module")
def gw(stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("metrics") / "data"
    env = gateway_env(UNDERSTUDY_API_KEYS=CLIENT_KEY, UNDERSTUDY_STUDENT_BACKEND="none")
    with GatewayProcess(stub.base_url, data, env=env, config=CONFIG) as gateway:
        yield gateway


SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
    "gauge": ("",),
}


def exported_names(text: str) -> set[str]:
    """Every sample name the exposition declares, those without a sample yet included."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def test_metrics_after_real_traffic(gw, teacher):
    client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
    headers = {"X-Understudy-Task": TASK}
    messages = [{"role": "user", "content": "What is 2+2?"}]
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers=headers
        )
    for _ in range(2):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, extra_headers=headers
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "4"
    teacher.control(fail_next=[429])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers=headers
        )

    ok = gw.wait_rows("task = ? and status = 'ok'", (TASK,), count=5)
    assert len(ok) == 5
    deadline = time.monotonic() + 5
    while True:  # a stream's row and counters are final once the gateway saw its end
        text, samples = scrape(gw)
        done = value(
            samples, "understudy_requests_total", task=TASK, served_by="teacher", status="ok"
        )
        if done == 5 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert done == 5
    assert (
        value(samples, "understudy_requests_total", task=TASK, served_by="teacher", status="error")
        == 1
    )

    # Teacher spend: each row priced by hand from its usage with the override, summed.
    expected = sum((r["prompt_tokens"] * 1 + r["completion_tokens"] * 4) / 1e6 for r in ok)
    assert expected > 0
    assert sum(r["teacher_cost_usd"] for r in ok) == pytest.approx(expected)
    assert all(r["saved_usd"] == 0 and r["avoided_cost_usd"] == 0 for r in ok)
    spend = value(samples, "understudy_teacher_spend_usd_total", task=TASK, kind="teacher")
    assert spend == pytest.approx(expected)
    prompt = value(
        samples, "understudy_tokens_total", task=TASK, served_by="teacher", kind="prompt"
    )
    assert prompt == sum(r["prompt_tokens"] for r in ok)
    assert value(samples, "understudy_coverage", task=TASK) == 0.0

    # Latency: every answer in the total, teacher and overhead histograms; overhead < total.
    total_n = value(samples, "understudy_request_latency_seconds_count", served_by="teacher")
    assert total_n == 6
    assert value(samples, "understudy_teacher_latency_seconds_count") == 6
    assert value(samples, "understudy_gateway_overhead_seconds_count") == 6
    overhead = value(samples, "understudy_gateway_overhead_seconds_sum")
    assert (
        0
        <= overhead
        < value(samples, "understudy_request_latency_seconds_sum", served_by="teacher")
    )

    assert value(samples, "understudy_log_queue_depth") is not None
    assert value(samples, "understudy_log_dropped_rows_total") == 0

    # No secret in any label value (or anywhere in the exposition).
    assert TEACHER_KEY not in text and CLIENT_KEY not in text

    # The shipped Grafana dashboard asks only for metrics the gateway exports.
    exported = exported_names(text) | STUDENT_SAMPLES
    wanted = set(re.findall(r"understudy_[a-z_]+", GRAFANA.read_text()))
    assert wanted and wanted <= exported, wanted - exported


def test_the_content_type_names_one_charset(gw):
    content_type = httpx.get(f"{gw.url}/metrics").headers["content-type"]
    assert content_type.startswith("text/plain; version=")
    assert content_type.count("charset=") == 1 and content_type.endswith("; charset=utf-8")


def test_distill_runs_are_read_from_the_database(gw):
    db = open_database(gw.address)
    now = time.time()
    runs = [
        ("r1", "succeeded", True, now - 7200),
        ("r2", "succeeded", False, now - 3600),
        ("r3", "failed", False, now - 60),
    ]
    for run_id, status, promoted, at in runs:
        insert_run(
            db,
            {
                "id": run_id,
                "task": TASK,
                "started_at": at - 100,
                "finished_at": at,
                "status": status,
                "promoted": int(promoted),
            },
        )
    db.conn.close()
    _, samples = scrape(gw)
    for outcome in ("promoted", "rejected", "failed"):
        assert value(samples, "understudy_distill_runs_total", task=TASK, outcome=outcome) == 1
    last = value(samples, "understudy_distill_last_success_timestamp_seconds", task=TASK)
    assert last == pytest.approx(now - 3600)


def test_student_state_metrics():
    """Champion version, router threshold and live agreement come from what is serving."""
    spec = {
        "kind": "label",
        "quality_target": 0.95,
        "threshold": {
            "threshold": 0.8125,
            "expected_coverage": 0.6,
            "n_calibration": 100,
            "quality_target": 0.95,
            "confidence": 0.95,
        },
    }
    router = build_router(spec, RouterConfig())
    version = ModelVersion("faq@v4", "faq", 4, "tiny", None, "/m", "champion", 0.0)
    slot = Slot("faq", "routed", version, StudentModel("faq@v4", "/m"), router)
    for agreed in (True, True, True, False):
        router.record_shadow(agreed)

    class Pool:
        def student_states(self):
            return [student_state(slot)]

    families = {f.name: f for f in StudentCollector(Pool()).collect()}
    assert {s.name for f in families.values() for s in f.samples} == STUDENT_SAMPLES
    (info,) = families["understudy_champion"].samples
    assert info.labels == {"task": "faq", "version": "faq@v4", "mode": "routed"}
    assert families["understudy_router_threshold"].samples[0].value == 0.8125
    assert families["understudy_live_agreement"].samples[0].value == 0.75
    assert families["understudy_quality_target"].samples[0].value == 0.95
