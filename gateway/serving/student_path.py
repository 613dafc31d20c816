"""Student first: generate an answer and have the router judge it, before any byte goes out.

:meth:`StudentPath.verdict` says what to do with one request (serve the student, defer to the
teacher keeping the attempt, or no student at all); it never answers the client itself, so a
client never receives half a student answer followed by a teacher answer.
:func:`student_reply` dresses a served answer in OpenAI's wire shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import msgspec

from understudy.gateway.config import GatewayConfig
from understudy.gateway.protocol import ChatCompletionRequest, ResponsesRequest
from understudy.gateway.serving import responses_wire
from understudy.gateway.serving.call import Call
from understudy.gateway.serving.pool import Slot, StudentPool
from understudy.gateway.serving.replies import BodyReply, Reply, StreamReply
from understudy.gateway.serving.routing import Judgement
from understudy.gateway.serving.student_wire import (
    completion_body,
    completion_events,
    pieces,
    student_request,
    unsupported_reason,
)
from understudy.gateway.serving.teacher_keys import TeacherKeys
from understudy.gateway.serving.verdict import Attempt, Defer, NoStudent, Serve, Verdict
from understudy.student.base import StudentAnswer, StudentBackend, StudentError, StudentRequest

log = logging.getLogger("understudy.gateway")


class StudentPath:
    """``keys``: in pass-through mode without gateway keys, the teacher's verdict on each
    caller's key (:mod:`gateway.serving.teacher_keys`); the student answers only keys the
    teacher has accepted."""

    def __init__(
        self, settings: GatewayConfig, pool: StudentPool, keys: TeacherKeys | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.keys = keys

    async def verdict(self, call: Call) -> Verdict:
        """Ask the task's student, if it may answer, and judge its answer."""
        slot = self.pool.slot(call.record.task)
        backend = self.pool.backend
        if slot is None or slot.mode == "teacher-only" or backend is None:
            return NoStudent()
        if isinstance(call.req, ResponsesRequest):
            reason = call.no_student or responses_wire.unsupported_reason(
                call.req, self.settings.student
            )
            if reason is None and call.messages is None:
                reason = "input the student cannot read (images, files or tool items)"
        else:
            reason = unsupported_reason(call.endpoint.name, call.req, self.settings.student)
        if reason is not None:
            return NoStudent(f"teacher: {reason}")
        if self.keys is not None and not await self.keys.accepted(call.ctx.authorization):
            return NoStudent("teacher: the teacher has not accepted the caller's key")
        request = self._request(slot, call)
        answer = await self._generate(backend, slot, request)
        if isinstance(answer, str):
            return NoStudent(answer)
        attempt = Attempt(slot, answer, _judge(slot, answer, call, request))
        if slot.mode == "shadow":
            return Defer(attempt, "shadow", "shadow mode: the teacher serves")
        if slot.router.should_audit():
            would = "serve" if attempt.judgement.serve else "defer"
            reason = f"audit: the student would {would} ({attempt.judgement.reason})"
            return Defer(attempt, "audit", reason)
        if attempt.judgement.serve:
            return Serve(attempt)
        return Defer(attempt, "failure", f"deferred: {attempt.judgement.reason}")

    def _request(self, slot: Slot, call: Call) -> StudentRequest:
        if isinstance(call.req, ResponsesRequest):
            assert call.messages is not None
            return responses_wire.student_request(
                slot.model, call.req, call.messages, self.settings.student
            )
        assert isinstance(call.req, ChatCompletionRequest)  # the student serves chat too
        return student_request(slot.model, call.req, self.settings.student)

    async def _generate(
        self, backend: StudentBackend, slot: Slot, request: StudentRequest
    ) -> StudentAnswer | str:
        """The student's answer, or why there is none."""
        slot.inflight += 1  # a swap keeps this model loaded until the answer is in
        try:
            return await asyncio.wait_for(
                backend.generate(request), self.settings.student.timeout_s
            )
        except (StudentError, TimeoutError) as exc:
            log.warning("student %s failed: %s", slot.version.id, exc)
            return f"teacher: student failed ({type(exc).__name__}: {exc})"
        finally:
            slot.inflight -= 1


def _judge(slot: Slot, answer: StudentAnswer, call: Call, request: StudentRequest) -> Judgement:
    if isinstance(call.req, ResponsesRequest):
        fields = responses_wire.router_fields(call.req)
        calls = responses_wire.function_calls(answer.text, call.req)
        return slot.router.judge(answer, fields, tool_calls=calls, request=request)
    return slot.router.judge(answer, call.body, request=request)


def student_reply(call: Call, attempt: Attempt, *, degraded: bool = False) -> Reply:
    """The student's answer as the client asked for it (whole or streamed); the log row says
    the student served."""
    answer, version = attempt.answer, attempt.slot.version.id
    record, headers = call.record, call.headers
    record.served_by = "student"
    record.route_reason = record.route_reason or f"student: {attempt.judgement.reason}"
    headers["x-understudy-served-by"] = "student"
    if degraded:
        headers["x-understudy-degraded"] = "true"
    record.prompt_tokens = answer.prompt_tokens
    record.completion_tokens = answer.completion_tokens
    record.total_tokens = answer.prompt_tokens + answer.completion_tokens
    if isinstance(call.req, ResponsesRequest):
        return _response_reply(call, answer, call.req)
    body = msgspec.json.encode(completion_body(answer, call.req.model, version))
    record.response_json = body.decode()
    if call.req.stream:
        options = call.req.stream_options
        include_usage = bool(options is not None and options.include_usage)
        events = completion_events(answer, call.req.model, version, include_usage)
        record.ttfb_ms = call.ctx.elapsed_ms()
        return StreamReply(dict(headers), _replay(events))
    return BodyReply(200, dict(headers), body)


def _response_reply(call: Call, answer: StudentAnswer, req: ResponsesRequest) -> Reply:
    """A served Responses answer: the response object the log keeps and ``GET`` returns."""
    calls = responses_wire.function_calls(answer.text, req)
    response = responses_wire.response_object(answer, req, calls, responses_wire.new_id("resp"))
    body = msgspec.json.encode(response)
    call.record.response_id = response.id
    call.record.response_json = body.decode()
    if req.stream:
        events = responses_wire.response_events(response, pieces(answer))
        call.record.ttfb_ms = call.ctx.elapsed_ms()
        return StreamReply(dict(call.headers), _replay(events))
    return BodyReply(200, dict(call.headers), body)


async def _replay(events: list[bytes]) -> AsyncGenerator[bytes, None]:
    for event in events:
        yield event
