"""The books of serving: every log row, student attempt row, cost and metric goes through one
:class:`Ledger`, injected where it is needed."""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec

from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.accounting.metrics import Metrics
from understudy.gateway.serving.call import Call
from understudy.gateway.serving.verdict import Attempt, AttemptKind
from understudy.storage.records import STATUS_CUT, STATUS_INCOMPLETE, RequestRecord
from understudy.storage.request_log import RequestLogWriter
from understudy.student.base import StudentAnswer

ATTEMPTS_TABLE = "student_attempts"


class Ledger:
    def __init__(self, costs: CostBook, writer: RequestLogWriter, metrics: Metrics) -> None:
        self.costs = costs
        self.writer = writer
        self.metrics = metrics

    def finish(
        self, call: Call, status: str, http_status: int, *, error: str | None = None
    ) -> None:
        """Close the request's log row: status, latency and cost; submit it and count it."""
        record, ctx = call.record, call.ctx
        record.status = status
        record.http_status = http_status
        record.error = error
        record.latency_ms = ctx.elapsed_ms()
        if status in (STATUS_INCOMPLETE, STATUS_CUT) and record.total_tokens is None:
            estimate_tokens(record)
        self.costs.fill(record)
        self.writer.submit(RequestRecord.TABLE, record.as_row())
        m = self.metrics
        task = m.task(record.task)
        m.requests.labels(task, record.served_by, status).inc()
        m.latency.labels(record.served_by).observe(record.latency_ms / 1000)
        if record.prompt_tokens:
            m.tokens.labels(task, record.served_by, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            m.tokens.labels(task, record.served_by, "completion").inc(record.completion_tokens)
        m.observe_request(record, ctx.teacher_s, ctx.student_s)

    def shadow_row(self, record: RequestRecord) -> None:
        """Write a shadow teacher call's row (not a client request): costed, not counted."""
        self.costs.fill(record)
        self.writer.submit(RequestRecord.TABLE, record.as_row())
        self.metrics.observe_costs(record)

    def passthrough_row(self, record: RequestRecord) -> None:
        """Write a relayed call's metadata row (costed by the relay) and count it."""
        self.writer.submit(RequestRecord.TABLE, record.as_row())
        self.metrics.observe_passthrough(record)

    def student_answered(self, call: Call, answer: StudentAnswer) -> None:
        """The student's time and cost go on the request's row."""
        call.ctx.student_s = answer.latency_ms / 1000
        call.record.student_cost_usd = self.costs.student_cost(
            answer.prompt_tokens + answer.completion_tokens, call.ctx.student_s
        )
        self.metrics.student_latency.observe(answer.latency_ms / 1000)

    def attempt(
        self, request_id: str, attempt: Attempt, kind: AttemptKind, agreed: bool | None
    ) -> None:
        """Keep the student's attempt: a failure case, or a shadow pair with its agreement."""
        answer, judgement = attempt.answer, attempt.judgement
        self.writer.submit(
            ATTEMPTS_TABLE,
            {
                "request_id": request_id,
                "created_at": time.time(),
                "task": attempt.slot.task,
                "student_version": attempt.slot.version.id,
                "kind": kind,
                "text": answer.text,
                "response_json": None,
                "confidence": judgement.confidence,
                "features_json": msgspec.json.encode(judgement.features).decode(),
                "decision": judgement.reason,
                "agreed": None if agreed is None else int(agreed),
                "latency_ms": answer.latency_ms,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
            },
        )

    def shadow_checked(self, task: str, agreed: bool) -> None:
        self.metrics.shadow_agreement.labels(task).inc(int(agreed))
        self.metrics.shadow_total.labels(task).inc()

    def teacher_waited(self, seconds: float) -> None:
        self.metrics.teacher_latency.observe(seconds)

    def teacher_retried(self, attempts: int) -> None:
        if attempts > 1:
            self.metrics.teacher_retries.inc(attempts - 1)


CHARS_PER_TOKEN = 4
"""The estimate's ratio: about four characters of English text a token."""


def estimate_tokens(record: RequestRecord) -> None:
    """Tokens of an answer cut short (the client left, or the teacher's stream broke off)
    before the teacher's usage arrived: the request's body and the text streamed so far, at
    :data:`CHARS_PER_TOKEN`. Budgets count them; without it such a row counted nothing, and a
    client that left every stream one event early spent without limit."""
    prompt = math.ceil(len(record.request_json) / CHARS_PER_TOKEN)
    completion = math.ceil(_streamed_chars(record.response_json) / CHARS_PER_TOKEN)
    record.prompt_tokens = record.prompt_tokens or prompt
    record.completion_tokens = record.completion_tokens or completion
    record.total_tokens = record.prompt_tokens + record.completion_tokens


def _streamed_chars(response_json: str | None) -> int:
    """Characters of text and tool arguments in a (partial) assembled answer."""
    if not response_json:
        return 0
    try:
        answer = msgspec.json.decode(response_json)
    except msgspec.DecodeError:
        return len(response_json)
    return _text_chars(answer)


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        keys = ("content", "text", "arguments", "refusal", "output", "choices", "message")
        return sum(_text_chars(value[k]) for k in keys if k in value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    return 0
