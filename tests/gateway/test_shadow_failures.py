"""A shadow call that fails is logged as a shadow row; its error never escapes the task."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

from tests.teacher_stub import running_stub
from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.accounting.metrics import Metrics
from understudy.gateway.config import CostConfig, GatewayConfig, TeacherConfig
from understudy.gateway.serving.call import CHAT
from understudy.gateway.serving.ledger import Ledger
from understudy.gateway.serving.shadow import Shadow
from understudy.gateway.teacher.client import TeacherClient
from understudy.storage.database import Store
from understudy.storage.request_log import RequestLogWriter


async def test_a_shadow_call_answered_with_html_is_a_shadow_error_row(tmp_path, caplog):
    """An HTML 200 on a shadow call was "Task exception was never retrieved": no shadow row,
    its spend never logged."""
    db = tmp_path / "understudy.db"
    writer = RequestLogWriter(db, commit_interval_ms=10)
    writer.start()
    with running_stub() as stub:
        stub.control(misbehave="html")
        teacher = TeacherClient(TeacherConfig(url=stub.base_url, max_retries=0))
        shadow = Shadow(
            GatewayConfig(),
            teacher,
            Ledger(CostBook(CostConfig()), writer, Metrics(writer)),
            Store(db),
        )
        messages = [{"role": "user", "content": "What is 2+2?"}]
        call = SimpleNamespace(
            body={"model": "m", "messages": messages},
            upstream=None,
            endpoint=CHAT,
            req=SimpleNamespace(model="m"),
            record=SimpleNamespace(task="t", task_source="header", confidence=0.9),
            ctx=SimpleNamespace(
                request_id="req_served",
                api_key_id=None,
                authorization=None,
                forward_headers={},
                created_at=1_700_000_000.0,
            ),
        )
        slot = SimpleNamespace(
            version=SimpleNamespace(id="v1"), router=SimpleNamespace(should_shadow=lambda: True)
        )
        shadow.maybe_check(call, SimpleNamespace(slot=slot))
        await shadow.drain()
        await teacher.close()
    writer.close()
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    [row] = [dict(r) for r in conn.execute("select * from requests")]
    conn.close()
    assert row["served_by"] == "shadow" and row["route_reason"] == "shadow of req_served"
    assert row["status"] == "error" and row["http_status"] == 502
    assert row["created_at"] == 1_700_000_000.0  # logged at its request's arrival
    assert "not JSON" in row["error"]
    assert "never retrieved" not in caplog.text and "shadow job failed" not in caplog.text
    # one line in the gateway's log, like any teacher failure (a shadow call's left none)
    (line,) = [r.getMessage() for r in caplog.records if "teacher call failed" in r.getMessage()]
    assert "HTTP 502 after 1 attempt;" in line and "task t, request req_served" in line
    assert f"shadow check {row['id']}" in line
