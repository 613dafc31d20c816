"""The teacher answers: one call (retried by the client), or a stream relayed event by event.

The teacher's side of the log row (model, tokens, answer, time to first byte) is filled here;
what the call came to is an :class:`Outcome`, final at once for a whole answer and when the
events end for a stream. A client that leaves a stream early leaves it ``incomplete``.

Every teacher failure leaves one line in the gateway's log (:func:`log_failure`): a refusal
(4xx), a 502/504 once retries are spent, a refusal of the gateway's own credentials, a stream
cut short; with its status, the attempts made, the task and the request id, and never a key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from understudy.gateway.errors import (
    UnderstudyError,
    UpstreamError,
    UpstreamTimeoutError,
    responses_error_event,
    stream_error_events,
)
from understudy.gateway.serving.call import Call
from understudy.gateway.serving.ledger import Ledger
from understudy.gateway.serving.replies import BodyReply, Reply, StreamReply
from understudy.gateway.teacher.client import TeacherClient, TeacherResponse, TeacherStream
from understudy.gateway.teacher.contract import TeacherContractError
from understudy.gateway.teacher.sse import (
    ResponsesAssembler,
    StreamAssembler,
    assembler_for,
    event_data,
)
from understudy.storage.records import (
    STATUS_CUT,
    STATUS_ERROR,
    STATUS_INCOMPLETE,
    STATUS_OK,
    RequestRecord,
)

log = logging.getLogger("understudy.gateway")

# Key-shaped text (``sk-...``, a bearer credential) is never written to the log, known or not.
_KEY_SHAPED = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+\S+)", re.IGNORECASE)
_LOUD = frozenset({401, 403, 408, 429})  # refusals an operator acts on; other 4xx are clients'


@dataclass
class Outcome:
    """What the teacher call came to, for the log row and the student's attempt."""

    status: str = STATUS_INCOMPLETE
    http_status: int = 200
    error: str | None = None
    answer: dict[str, Any] | None = None  # the teacher's full answer, when it gave one


@dataclass
class TeacherTurn:
    reply: Reply
    outcome: Outcome  # final when ``reply`` is a body; when its events end for a stream


class TeacherPath:
    def __init__(self, teacher: TeacherClient, ledger: Ledger) -> None:
        self.teacher = teacher
        self.ledger = ledger

    async def ask(self, call: Call) -> TeacherTurn:
        """Call the teacher; raises :class:`UpstreamError` once the retry budget is spent."""
        try:
            if call.req.stream:
                return await self._stream(call)
            return await self._unary(call)
        except UpstreamError as exc:
            log_failure(call, exc.status_code, exc.attempts, exc.message)
            raise

    # -- non-streaming ------------------------------------------------------------------

    async def _unary(self, call: Call) -> TeacherTurn:
        ctx, record, headers = call.ctx, call.record, call.headers
        teacher_started = time.perf_counter()
        answer = await self.teacher.post(
            call.endpoint.path,
            call.teacher_body,
            authorization=ctx.authorization,
            extra=ctx.forward_headers,
        )
        self.ledger.teacher_retried(answer.attempts)
        ctx.teacher_s += time.perf_counter() - teacher_started
        self.ledger.teacher_waited(ctx.teacher_s)
        headers.update(answer.headers)
        content = answer.content
        if answer.answer is not None and _restore_previous(call, answer.answer):
            content = msgspec.json.encode(answer.answer)
        reply = BodyReply(answer.status_code, headers, content)
        if answer.answer is not None:
            _fill_from_response(record, answer.answer)
            record.response_json = content.decode("utf-8", "replace")
            return TeacherTurn(reply, Outcome(STATUS_OK, 200, answer=answer.answer))
        return TeacherTurn(reply, _refused(call, answer))

    # -- streaming ----------------------------------------------------------------------

    async def _stream(self, call: Call) -> TeacherTurn:
        ctx, body, headers = call.ctx, call.body, call.headers
        options = body.get("stream_options") or {}
        client_wants_usage = bool(options.get("include_usage"))
        upstream = call.teacher_body
        if call.endpoint.name == "responses":
            client_wants_usage = True  # the last event carries usage in this API
        elif not client_wants_usage:
            # Ask for usage so the log has token counts; the client does not see that chunk.
            upstream_body = {**body, "stream_options": {**options, "include_usage": True}}
            upstream = msgspec.json.encode(upstream_body)
        teacher_started = time.perf_counter()
        opened = await self.teacher.open_stream(
            call.endpoint.path,
            upstream,
            authorization=ctx.authorization,
            extra=ctx.forward_headers,
        )
        self.ledger.teacher_retried(opened.attempts)
        ctx.teacher_s += time.perf_counter() - teacher_started
        headers.update(opened.headers)
        if isinstance(opened, TeacherResponse):
            reply = BodyReply(opened.status_code, headers, opened.content)
            return TeacherTurn(reply, _refused(call, opened))
        outcome = Outcome()
        events = self._relay(call, opened, outcome, hide_usage=not client_wants_usage)
        return TeacherTurn(StreamReply(headers, events), outcome)

    async def _relay(
        self, call: Call, stream: TeacherStream, outcome: Outcome, *, hide_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        ctx, record = call.ctx, call.record
        assembler = assembler_for(call.endpoint.name)
        relay_started = time.perf_counter()
        try:
            broke: UpstreamError | None = None
            try:
                async for event in stream.events():
                    event = _with_previous(call, event)
                    if _keep_event(event, assembler, hide_usage):
                        if record.ttfb_ms is None:
                            record.ttfb_ms = ctx.elapsed_ms()
                        yield event
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                timed_out = isinstance(exc, httpx.TimeoutException)
                broke = (UpstreamTimeoutError if timed_out else UpstreamError)(
                    f"the teacher's stream broke off: {type(exc).__name__}"
                )
            except UpstreamError as exc:
                broke = exc
            _conclude(outcome, assembler, broke)
            if outcome.status != STATUS_OK:
                seen = f"HTTP {outcome.http_status}, stream {outcome.status}"
                log_failure(call, seen, stream.attempts, str(outcome.error))
            if broke is not None or not assembler.done:
                cut = broke or UpstreamError(str(outcome.error))
                for event in _stream_end(cut, assembler):
                    yield event
        finally:
            await stream.aclose()
            ctx.teacher_s += time.perf_counter() - relay_started
            self.ledger.teacher_waited(ctx.teacher_s)
            result = assembler.result()
            _fill_from_response(record, result, usage=assembler.usage)
            record.response_json = msgspec.json.encode(result).decode()
            if outcome.status == STATUS_OK:
                outcome.answer = result


def _restore_previous(call: Call, answer: Any) -> bool:
    """A Responses answer to a request whose chain was expanded for the teacher (student turns
    sent as input, chained to an older id or to none) names what the teacher was sent; put back
    the ``previous_response_id`` the client sent. True when it changed."""
    if call.endpoint.name != "responses" or call.upstream is None or not isinstance(answer, dict):
        return False
    response = answer if answer.get("object") == "response" else answer.get("response")
    previous = call.body.get("previous_response_id")
    if not isinstance(response, dict) or response.get("previous_response_id") == previous:
        return False
    response["previous_response_id"] = previous
    return True


def _with_previous(call: Call, event: bytes) -> bytes:
    """A stream event whose response object names the client's ``previous_response_id``
    (:func:`_restore_previous`)."""
    if call.endpoint.name != "responses" or call.upstream is None:
        return event
    payload = event_data(event)
    if payload is None or b'"previous_response_id"' not in payload:
        return event
    parsed = _parse_json(payload)
    if not _restore_previous(call, parsed):
        return event
    return event.replace(payload, msgspec.json.encode(parsed), 1)


def _conclude(
    outcome: Outcome, assembler: StreamAssembler | ResponsesAssembler, broke: UpstreamError | None
) -> None:
    """The stream's outcome: its own end (ok, or the error it ended with), broken off (a cut,
    or an error when what the teacher sent broke the contract), or ended early."""
    if isinstance(broke, TeacherContractError):
        outcome.status, outcome.http_status, outcome.error = STATUS_ERROR, 502, broke.message
    elif broke is not None:
        outcome.status, outcome.error = STATUS_CUT, broke.message
    elif assembler.done:
        outcome.status = STATUS_ERROR if assembler.error else STATUS_OK
        outcome.error = _message(assembler.error) if assembler.error else None
    else:
        outcome.status = STATUS_CUT
        outcome.error = "the teacher's stream ended before its end"


def _stream_end(
    error: UnderstudyError, assembler: StreamAssembler | ResponsesAssembler
) -> tuple[bytes, ...]:
    """The events that end a stream the teacher broke off, in its API's way."""
    if isinstance(assembler, ResponsesAssembler):
        return (responses_error_event(error, assembler.sequence_number + 1),)
    return stream_error_events(error)


def _keep_event(
    event: bytes, assembler: StreamAssembler | ResponsesAssembler, hide_usage: bool
) -> bool:
    payload = event_data(event)
    if payload is None:
        return True
    chunk = assembler.add(payload)
    return not (
        hide_usage and chunk is not None and not chunk.get("choices") and chunk.get("usage")
    )


def _refused(call: Call, answer: TeacherResponse) -> Outcome:
    """A teacher 4xx (passed through as it is)."""
    parsed = _parse_json(answer.content)
    call.record.response_json = answer.content.decode("utf-8", "replace") if parsed else None
    outcome = Outcome(STATUS_ERROR, answer.status_code, _teacher_error_text(answer, parsed))
    log_failure(call, answer.status_code, answer.attempts, str(outcome.error))
    return outcome


def log_failure(call: Call, status: int | str, attempts: int, message: str) -> None:
    """One log line for a teacher call that did not end in an answer (``status``: the HTTP
    status, or how a stream ended)."""
    loud = isinstance(status, str) or status >= 500 or status in _LOUD
    log.log(
        logging.WARNING if loud else logging.INFO,
        "teacher call failed: %s after %d attempt%s; task %s, request %s: %s",
        f"HTTP {status}" if isinstance(status, int) else status,
        attempts,
        "" if attempts == 1 else "s",
        call.record.task,
        call.ctx.request_id,
        _KEY_SHAPED.sub("[redacted]", message[:300]),
    )


def _parse_json(content: bytes) -> Any:
    try:
        return msgspec.json.decode(content)
    except (msgspec.DecodeError, RecursionError):
        return None


def _fill_from_response(
    record: RequestRecord, response: Mapping[str, Any], usage: Mapping[str, Any] | None = None
) -> None:
    record.teacher_model = response.get("model") or record.teacher_model
    usage = usage if usage is not None else response.get("usage")
    if response.get("object") == "response" and isinstance(response.get("id"), str):
        record.response_id = response["id"]
    if isinstance(usage, Mapping):
        # Chat's names, or the Responses API's (input_tokens includes cached tokens and
        # output_tokens reasoning tokens, as prompt and completion tokens do in chat).
        record.prompt_tokens = usage.get("prompt_tokens", usage.get("input_tokens"))
        record.completion_tokens = usage.get("completion_tokens", usage.get("output_tokens"))
        record.total_tokens = usage.get("total_tokens")


def _message(error: Mapping[str, Any] | None) -> str | None:
    return None if error is None else str(error.get("message") or error)[:1000]


def _teacher_error_text(answer: TeacherResponse, parsed: Any) -> str:
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return f"teacher HTTP {answer.status_code}: {_message(parsed['error'])}"
    return f"teacher HTTP {answer.status_code}"
