"""The request pipeline, written once for chat and completions, streaming and not.

parse -> validate -> resolve task -> teacher (retries) -> reply -> log (write-behind).
A streamed answer is relayed event by event as it arrives and logged when it ends; a client
that leaves early leaves a row marked ``incomplete``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.accounting.metrics import Metrics
from understudy.gateway.config import GatewayConfig
from understudy.gateway.errors import (
    UnderstudyError,
    UpstreamError,
    UpstreamTimeoutError,
    error_body,
    sse_error_event,
)
from understudy.gateway.protocol import decode_body, validate_chat, validate_completion
from understudy.gateway.serving.tasks import resolve_task
from understudy.gateway.teacher.sse import EventSplitter, StreamAssembler, event_data

if TYPE_CHECKING:
    from understudy.gateway.serving.student_path import StudentFlow
from understudy.gateway.teacher.client import TeacherClient, TeacherResponse, TeacherStream
from understudy.storage.records import (
    STATUS_CUT,
    STATUS_ERROR,
    STATUS_INCOMPLETE,
    STATUS_OK,
    RequestRecord,
)
from understudy.storage.request_log import RequestLogWriter

log = logging.getLogger("understudy.gateway")

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Endpoint:
    name: str  # "chat.completions" or "completions": also the log's endpoint column
    path: str  # the teacher path
    validate: Callable[[dict[str, Any]], Any]


CHAT = Endpoint("chat.completions", "/chat/completions", validate_chat)
COMPLETIONS = Endpoint("completions", "/completions", validate_completion)


@dataclass
class RequestContext:
    request_id: str
    authorization: str | None
    api_key_id: str | None
    task_header: str | None
    forward_headers: dict[str, str]
    started: float = field(default_factory=time.perf_counter)
    created_at: float = field(default_factory=time.time)
    teacher_s: float = 0.0  # time spent waiting on the teacher
    student_s: float = 0.0  # time spent generating the student's answer

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


@dataclass
class BodyReply:
    status_code: int
    headers: dict[str, str]
    content: bytes


@dataclass
class StreamReply:
    headers: dict[str, str]
    events: AsyncIterator[bytes]


Reply = BodyReply | StreamReply
TeacherHook = Callable[[dict[str, Any] | None, "UnderstudyError | None"], None]


@dataclass
class Call:
    """One request on its way through the pipeline."""

    endpoint: Endpoint
    ctx: RequestContext
    raw: bytes
    body: dict[str, Any]
    req: Any
    record: RequestRecord
    headers: dict[str, str]
    # Called once with the teacher's full answer (or the error) when the teacher call ends.
    on_teacher: TeacherHook | None = None

    def teacher_done(self, response: dict[str, Any] | None, error: UnderstudyError | None) -> None:
        if self.on_teacher is not None:
            hook, self.on_teacher = self.on_teacher, None
            hook(response, error)


class GatewayService:
    def __init__(
        self,
        settings: GatewayConfig,
        teacher: TeacherClient,
        writer: RequestLogWriter,
        metrics: Metrics,
        students: StudentFlow | None = None,
        costs: CostBook | None = None,
    ) -> None:
        self.settings = settings
        self.teacher = teacher
        self.writer = writer
        self.metrics = metrics
        self.students = students
        self.costs = costs or CostBook(settings.costs)

    async def handle(self, endpoint: Endpoint, ctx: RequestContext, raw: bytes) -> Reply:
        """Serve one request; every failure becomes an OpenAI-shaped reply, never an exception."""
        headers = {"x-request-id": ctx.request_id}
        try:
            body = decode_body(raw)
            req = endpoint.validate(body)
            task, source = resolve_task(
                ctx.task_header, req.model, self.settings.routes, body, endpoint.name
            )
        except UnderstudyError as exc:
            return error_reply(exc, headers)
        headers["x-understudy-task"] = task
        headers["x-understudy-served-by"] = "teacher"
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
        call = Call(endpoint, ctx, raw, body, req, record, headers)
        if self.students is not None:
            reply = await self.students.try_student(call)
            if reply is not None:
                return reply
        return await self.via_teacher(call)

    async def via_teacher(self, call: Call) -> Reply:
        """The teacher answers; a teacher failure becomes an OpenAI-shaped error reply."""
        try:
            return await self.teacher_reply(call)
        except UnderstudyError as exc:
            self.fail(call, exc)
            return error_reply(exc, call.headers)

    def fail(self, call: Call, exc: UnderstudyError) -> None:
        call.teacher_done(None, exc)
        self.finish(call.record, call.ctx, STATUS_ERROR, exc.status_code, error=exc.message)

    async def teacher_reply(self, call: Call) -> Reply:
        """Call the teacher; raises :class:`UpstreamError` once the retry budget is spent."""
        if call.req.stream:
            return await self._stream(call)
        return await self._unary(call)

    # -- non-streaming ------------------------------------------------------------------

    async def _unary(self, call: Call) -> BodyReply:
        ctx, record, headers = call.ctx, call.record, call.headers
        teacher_started = time.perf_counter()
        answer = await self.teacher.post(
            call.endpoint.path,
            call.raw,
            authorization=ctx.authorization,
            extra=ctx.forward_headers,
        )
        self._count_retries(answer.attempts)
        ctx.teacher_s += time.perf_counter() - teacher_started
        self.metrics.teacher_latency.observe(ctx.teacher_s)
        headers.update(answer.headers)
        parsed = _parse_json(answer.content)
        if answer.status_code == 200 and isinstance(parsed, dict):
            _fill_from_response(record, parsed)
            record.response_json = answer.content.decode("utf-8", "replace")
            call.teacher_done(parsed, None)
            self.finish(record, ctx, STATUS_OK, 200)
        else:
            self._teacher_refused(call, answer)
        return BodyReply(answer.status_code, headers, answer.content)

    def _teacher_refused(self, call: Call, answer: TeacherResponse) -> None:
        """A teacher 4xx (passed through as it is)."""
        parsed = _parse_json(answer.content)
        call.record.response_json = answer.content.decode("utf-8", "replace") if parsed else None
        call.teacher_done(None, None)
        self.finish(
            call.record,
            call.ctx,
            STATUS_ERROR,
            answer.status_code,
            error=_teacher_error_text(answer),
        )

    # -- streaming ----------------------------------------------------------------------

    async def _stream(self, call: Call) -> Reply:
        ctx, body, headers = call.ctx, call.body, call.headers
        options = body.get("stream_options") or {}
        client_wants_usage = bool(options.get("include_usage"))
        upstream_body = body
        if not client_wants_usage:
            # Ask for usage so the log has token counts; the client does not see that chunk.
            upstream_body = {**body, "stream_options": {**options, "include_usage": True}}
        teacher_started = time.perf_counter()
        opened = await self.teacher.open_stream(
            call.endpoint.path,
            msgspec.json.encode(upstream_body),
            authorization=ctx.authorization,
            extra=ctx.forward_headers,
        )
        self._count_retries(opened.attempts)
        ctx.teacher_s += time.perf_counter() - teacher_started
        headers.update(opened.headers)
        if isinstance(opened, TeacherResponse):
            self._teacher_refused(call, opened)
            return BodyReply(opened.status_code, headers, opened.content)
        return StreamReply(headers, self._relay(call, opened, hide_usage=not client_wants_usage))

    async def _relay(
        self, call: Call, stream: TeacherStream, *, hide_usage: bool
    ) -> AsyncIterator[bytes]:
        ctx, record = call.ctx, call.record
        splitter = EventSplitter()
        assembler = StreamAssembler(call.endpoint.name)
        status, error = STATUS_INCOMPLETE, None
        relay_started = time.perf_counter()
        try:
            try:
                async for data in stream:
                    for event in splitter.feed(data):
                        if self._keep_event(event, assembler, hide_usage):
                            if record.ttfb_ms is None:
                                record.ttfb_ms = ctx.elapsed_ms()
                            yield event
                for event in (splitter.pending,) if splitter.pending.strip() else ():
                    if self._keep_event(event + b"\n\n", assembler, hide_usage):
                        yield event + b"\n\n"
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                error = f"the teacher's stream broke off: {type(exc).__name__}"
            if assembler.done:
                status = STATUS_ERROR if assembler.error else STATUS_OK
                error = _message(assembler.error) if assembler.error else None
            else:
                status, error = STATUS_CUT, error or "the teacher's stream ended without [DONE]"
                exc_out = (UpstreamTimeoutError if "Timeout" in error else UpstreamError)(error)
                yield sse_error_event(exc_out)
                yield DONE_EVENT
        finally:
            await stream.aclose()
            ctx.teacher_s += time.perf_counter() - relay_started
            self.metrics.teacher_latency.observe(ctx.teacher_s)
            result = assembler.result()
            _fill_from_response(record, result, usage=assembler.usage)
            record.response_json = msgspec.json.encode(result).decode()
            call.teacher_done(result if status == STATUS_OK else None, None)
            self.finish(record, ctx, status, 200, error=error)

    @staticmethod
    def _keep_event(event: bytes, assembler: StreamAssembler, hide_usage: bool) -> bool:
        payload = event_data(event)
        if payload is None:
            return True
        chunk = assembler.add(payload)
        return not (
            hide_usage and chunk is not None and not chunk.get("choices") and chunk.get("usage")
        )

    # -- bookkeeping --------------------------------------------------------------------

    def finish(
        self,
        record: RequestRecord,
        ctx: RequestContext,
        status: str,
        http_status: int,
        *,
        error: str | None = None,
    ) -> None:
        record.status = status
        record.http_status = http_status
        record.error = error
        record.latency_ms = ctx.elapsed_ms()
        self.costs.fill(record)
        self.writer.submit(RequestRecord.TABLE, record.as_row())
        self.metrics.requests.labels(record.task, record.served_by, status).inc()
        self.metrics.latency.labels(record.served_by).observe(record.latency_ms / 1000)
        if record.prompt_tokens:
            self.metrics.tokens.labels(record.task, record.served_by, "prompt").inc(
                record.prompt_tokens
            )
        if record.completion_tokens:
            self.metrics.tokens.labels(record.task, record.served_by, "completion").inc(
                record.completion_tokens
            )
        self.metrics.observe_request(record, ctx.teacher_s, ctx.student_s)

    def log_shadow(self, record: RequestRecord) -> None:
        """Write a shadow teacher call's row (not a client request): costed, not counted."""
        self.costs.fill(record)
        self.writer.submit(RequestRecord.TABLE, record.as_row())
        self.metrics.observe_costs(record)

    def _count_retries(self, attempts: int) -> None:
        if attempts > 1:
            self.metrics.teacher_retries.inc(attempts - 1)


def error_reply(exc: UnderstudyError, headers: Mapping[str, str]) -> BodyReply:
    return BodyReply(exc.status_code, dict(headers), error_body(exc))


def _parse_json(content: bytes) -> Any:
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None


def _fill_from_response(
    record: RequestRecord, response: Mapping[str, Any], usage: Mapping[str, Any] | None = None
) -> None:
    record.teacher_model = response.get("model") or record.teacher_model
    usage = usage if usage is not None else response.get("usage")
    if isinstance(usage, Mapping):
        record.prompt_tokens = usage.get("prompt_tokens")
        record.completion_tokens = usage.get("completion_tokens")
        record.total_tokens = usage.get("total_tokens")


def _message(error: Mapping[str, Any] | None) -> str | None:
    return None if error is None else str(error.get("message") or error)[:1000]


def _teacher_error_text(answer: TeacherResponse) -> str:
    parsed = _parse_json(answer.content)
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return f"teacher HTTP {answer.status_code}: {_message(parsed['error'])}"
    return f"teacher HTTP {answer.status_code}"
