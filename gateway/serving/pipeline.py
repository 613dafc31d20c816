"""The request pipeline, written once for chat, completions and responses, streaming and not.

One request, top to bottom: parse -> validate -> resolve task -> the student path's verdict ->
the student's answer, or the teacher's -> settle (the student's attempt, then the log row).
Nothing here is called back: the pipeline owns the order. A failure is raised as an
:class:`UnderstudyError` carrying the headers gathered so far, after its log row is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from understudy.gateway.config import GatewayConfig
from understudy.gateway.errors import UnderstudyError, UpstreamError
from understudy.gateway.protocol import decode_body
from understudy.gateway.serving.call import Call, Endpoint, RequestContext
from understudy.gateway.serving.conversations import Conversations
from understudy.gateway.serving.ledger import Ledger
from understudy.gateway.serving.replies import Reply, StreamReply
from understudy.gateway.serving.shadow import Shadow
from understudy.gateway.serving.student_path import StudentPath, student_reply
from understudy.gateway.serving.tasks import AutoTasks, resolve_task
from understudy.gateway.serving.teacher_path import Outcome, TeacherPath
from understudy.gateway.serving.verdict import Attempt, Defer, NoStudent, Serve
from understudy.storage.records import STATUS_ERROR, STATUS_INCOMPLETE, STATUS_OK, RequestRecord

log = logging.getLogger("understudy.gateway")


class Pipeline:
    def __init__(
        self,
        settings: GatewayConfig,
        students: StudentPath | None,
        teacher: TeacherPath,
        shadow: Shadow,
        ledger: Ledger,
        conversations: Conversations | None = None,
    ) -> None:
        self.settings = settings
        self.conversations = conversations
        self.students = students
        self.teacher = teacher
        self.shadow = shadow
        self.ledger = ledger
        self.auto_tasks = AutoTasks(settings.max_auto_tasks)

    async def handle(self, endpoint: Endpoint, ctx: RequestContext, raw: bytes) -> Reply:
        """Serve one request; a failure raises an :class:`UnderstudyError` to answer with."""
        call = self._open(endpoint, ctx, raw)
        if self.conversations is not None and endpoint.name == "responses":
            try:
                await self.conversations.prepare(call)
            except UnderstudyError as exc:
                raise exc.with_headers(call.headers) from None
        verdict = await self.students.verdict(call) if self.students else NoStudent()
        if isinstance(verdict, NoStudent):
            if verdict.reason is not None:
                call.record.route_reason = verdict.reason
            return await self._teacher(call, None)
        self._student_answered(call, verdict.attempt)
        if isinstance(verdict, Serve):
            self.shadow.maybe_check(call, verdict.attempt)
            return self._student(call, verdict.attempt)
        call.record.route_reason = verdict.reason
        return await self._teacher(call, verdict)

    def _open(self, endpoint: Endpoint, ctx: RequestContext, raw: bytes) -> Call:
        """Parse, validate and name the task; the log row starts as the teacher's."""
        try:
            body = decode_body(raw)
            req = endpoint.validate(body)
            task, source = resolve_task(
                ctx.task_header, req.model, self.settings.routes, body, endpoint.name
            )
        except UnderstudyError as exc:
            raise exc.with_headers({"x-request-id": ctx.request_id}) from None
        if source == "fingerprint":
            task = self._admit(task)
        record = RequestRecord(
            id=ctx.request_id,
            created_at=ctx.created_at,
            endpoint=endpoint.name,
            task=task,
            task_source=source,
            requested_model=req.model,
            served_by="teacher",
            status=STATUS_INCOMPLETE,
            request_json=raw.decode(),
            stream=bool(req.stream),
            api_key_id=ctx.api_key_id,
        )
        headers = {
            "x-request-id": ctx.request_id,
            "x-understudy-task": task,
            "x-understudy-served-by": "teacher",
        }
        return Call(endpoint, ctx, raw, body, req, record, headers)

    def _admit(self, task: str) -> str:
        """A fingerprint's task, or the overflow task once ``max_auto_tasks`` are taken."""
        admitted = self.auto_tasks.admit(task)
        if admitted != task:
            self.ledger.metrics.auto_tasks_overflowed.inc()
            if self.auto_tasks.overflowed == 1:
                log.warning(
                    "%d tasks are named by prompt fingerprint (max_auto_tasks); requests of new "
                    "fingerprints are logged under %s",
                    self.auto_tasks.limit,
                    admitted,
                )
        return admitted

    def _student_answered(self, call: Call, attempt: Attempt) -> None:
        """The student's answer and confidence go on the row and the headers, served or not."""
        self.ledger.student_answered(call, attempt.answer)
        call.record.confidence = attempt.judgement.confidence
        call.record.student_version = attempt.slot.version.id
        call.headers["x-understudy-confidence"] = f"{attempt.judgement.confidence:.4f}"
        call.headers["x-understudy-student-version"] = attempt.slot.version.id

    def _student(self, call: Call, attempt: Attempt, *, degraded: bool = False) -> Reply:
        reply = student_reply(call, attempt, degraded=degraded)
        self.ledger.finish(call, STATUS_OK, 200)
        return reply

    async def _teacher(self, call: Call, deferred: Defer | None) -> Reply:
        """The teacher answers; a deferred student attempt is kept beside its answer."""
        try:
            turn = await self.teacher.ask(call)
        except UpstreamError as exc:
            if self._may_degrade(deferred):
                assert deferred is not None
                self._settle_attempt(call, deferred, None)
                call.record.route_reason = f"degraded: {exc.message}"
                log.warning(
                    "teacher failed (%s); serving the student answer (degraded)", exc.message
                )
                return self._student(call, deferred.attempt, degraded=True)
            raise self._failed(call, deferred, exc) from None
        except UnderstudyError as exc:
            raise self._failed(call, deferred, exc) from None
        except asyncio.CancelledError:  # the client left before the teacher answered
            self._settle(call, Outcome(STATUS_INCOMPLETE, 499, "the client left"), deferred)
            raise
        if isinstance(turn.reply, StreamReply):
            events = self._settled_stream(call, turn.reply.events, turn.outcome, deferred)
            return StreamReply(turn.reply.headers, events)
        self._settle(call, turn.outcome, deferred)
        return turn.reply

    def _may_degrade(self, deferred: Defer | None) -> bool:
        """A deferred (not shadow-mode) answer may stand in for a teacher that failed."""
        return (
            deferred is not None
            and deferred.kind in ("failure", "audit")
            and self.settings.student.degraded_mode == "serve"
            and bool(deferred.attempt.answer.text)
        )

    async def _settled_stream(
        self,
        call: Call,
        events: AsyncGenerator[bytes, None],
        outcome: Outcome,
        deferred: Defer | None,
    ) -> AsyncGenerator[bytes, None]:
        """Relay the teacher's events; settle once they end (or the client leaves)."""
        try:
            async with aclosing(events) as relayed:
                async for event in relayed:
                    yield event
        finally:
            self._settle(call, outcome, deferred)

    def _settle(self, call: Call, outcome: Outcome, deferred: Defer | None) -> None:
        self._settle_attempt(call, deferred, outcome.answer)
        self.ledger.finish(call, outcome.status, outcome.http_status, error=outcome.error)

    def _settle_attempt(
        self, call: Call, deferred: Defer | None, answer: dict[str, Any] | None
    ) -> None:
        if deferred is not None:
            self.shadow.keep_attempt(call.ctx.request_id, deferred.attempt, deferred.kind, answer)

    def _failed(self, call: Call, deferred: Defer | None, exc: UnderstudyError) -> UnderstudyError:
        """The teacher failed: settle the row as an error, and answer with ``exc``."""
        self._settle(call, Outcome(STATUS_ERROR, exc.status_code, exc.message), deferred)
        return exc.with_headers(call.headers)
