"""The books of serving: every log row, student attempt row, cost and metric goes through one
:class:`Ledger`, injected where it is needed."""

from __future__ import annotations

import time

import msgspec

from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.accounting.metrics import Metrics
from understudy.gateway.serving.call import Call
from understudy.gateway.serving.verdict import Attempt, AttemptKind
from understudy.storage.records import RequestRecord
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
        self.costs.fill(record)
        self.writer.submit(RequestRecord.TABLE, record.as_row())
        m = self.metrics
        m.requests.labels(record.task, record.served_by, status).inc()
        m.latency.labels(record.served_by).observe(record.latency_ms / 1000)
        if record.prompt_tokens:
            m.tokens.labels(record.task, record.served_by, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            m.tokens.labels(record.task, record.served_by, "completion").inc(
                record.completion_tokens
            )
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
