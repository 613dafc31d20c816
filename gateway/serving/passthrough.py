"""Every other path under ``/v1/``: relayed to the teacher as it comes, logged as a metered
metadata row.

The request body goes upstream chunk by chunk while it arrives, and the answer comes back the
same way (multipart uploads, binary audio, SSE): neither is ever held whole. The row carries
the endpoint family, method, path with its ids replaced, status, bytes each way, latency, the
key id and, when a JSON answer carries ``usage`` (embeddings), tokens and cost. Bodies are not
kept unless ``passthrough.store_json_bodies`` asks for small JSON ones. These rows are
``served_by = "passthrough"``: no task, never a training example.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass

import httpx

from understudy.gateway.accounting.cost_book import CostBook
from understudy.gateway.config import PassthroughConfig
from understudy.gateway.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    UnderstudyError,
    UpstreamError,
)
from understudy.gateway.serving.ledger import Ledger
from understudy.gateway.serving.passthrough_wire import (
    WHOLE_BYTES,
    BodyProbe,
    client_headers,
    family,
    path_label,
    teacher_headers,
    usage_tokens,
)
from understudy.gateway.teacher.client import TeacherClient
from understudy.storage.records import (
    SERVED_PASSTHROUGH,
    STATUS_CUT,
    STATUS_ERROR,
    STATUS_INCOMPLETE,
    STATUS_OK,
    RequestRecord,
)

log = logging.getLogger("understudy.gateway")

REALTIME_PATH = "/v1/realtime"
REALTIME_MESSAGE = (
    "The Realtime API (WebSocket, /v1/realtime) is not proxied by this gateway: connect to "
    "the teacher directly. Its HTTP endpoints (/v1/realtime/client_secrets, ...) are relayed."
)


@dataclass
class PassCall:
    """One pass-through request as the api layer hands it over."""

    request_id: str
    method: str
    path: str  # decoded: what allow/deny, the family and the label see
    raw_path: str  # as the client sent it, still percent-encoded: what the teacher gets
    query: str
    headers: Sequence[tuple[str, str]]  # lower-case names, as received
    body: AsyncIterable[bytes] | bytes  # bytes: a small body of known length, read already
    content_length: int | None
    authorization: str | None
    api_key_id: str | None
    started: float
    created_at: float


@dataclass
class PassReply:
    """The teacher's answer on its way back: status, headers, and the body as it arrives (or
    whole, when the teacher said it is small)."""

    status_code: int
    headers: list[tuple[str, str]]
    content_type: str | None
    body: AsyncGenerator[bytes, None] | bytes


class RequestBody:
    """The client's body read as it is sent upstream: counted, held to the size limit,
    probed (JSON only) for its model and, when asked, kept whole if small."""

    def __init__(
        self, source: AsyncIterable[bytes] | bytes, limit: int, probe: BodyProbe | None
    ) -> None:
        self.source = source
        self.limit = limit
        self.probe = probe
        self.started = False
        self.size = 0
        self.whole = source if isinstance(source, bytes) else None
        if self.whole is not None:
            self.size = len(self.whole)
            if self.size > limit:
                raise _too_large(limit)
            if probe is not None:
                probe.feed(self.whole)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        assert not isinstance(self.source, bytes)
        async for chunk in self.source:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self.limit:
                raise _too_large(self.limit)
            if self.probe is not None:
                self.probe.feed(chunk)
            yield chunk


class Passthrough:
    def __init__(self, settings: PassthroughConfig, teacher: TeacherClient, ledger: Ledger) -> None:
        self.settings = settings
        self.teacher = teacher
        self.ledger = ledger

    @property
    def costs(self) -> CostBook:
        return self.ledger.costs

    async def relay(self, call: PassCall) -> PassReply:
        """Open the teacher's answer to ``call``; the row is written once its body ends (or the
        client leaves). Refusals and a teacher that cannot be reached raise."""
        self._check(call)
        record = self._record(call)
        sent = dict(call.headers)
        probe = None
        if _is_json(sent.get("content-type")):
            probe = BodyProbe(self._keep_bytes(), sent.get("content-encoding"))
        body = RequestBody(call.body, self.settings.max_body_bytes, probe)
        has_body = bool(call.content_length) or "transfer-encoding" in sent
        target = call.raw_path.removeprefix("/v1") + (f"?{call.query}" if call.query else "")
        try:
            response, _ = await self.teacher.relay(
                call.method,
                target,
                teacher_headers(call.headers),
                (body.whole if body.whole is not None else body) if has_body else None,
                authorization=call.authorization,
            )
        except UnderstudyError as exc:
            self._settle(record, call, body, None, STATUS_ERROR, exc.status_code, exc.message)
            if isinstance(exc, UpstreamError):
                log.warning(
                    "teacher call failed: HTTP %d after %d attempt%s; %s %s, request %s: %s",
                    exc.status_code,
                    exc.attempts,
                    "" if exc.attempts == 1 else "s",
                    call.method,
                    record.path_label,
                    call.request_id,
                    exc.message[:300],
                )
            raise exc.with_headers({"x-request-id": call.request_id}) from None
        except BaseException:
            self._settle(record, call, body, None, STATUS_INCOMPLETE, 499, "the client left")
            raise
        record.ttfb_ms = _ms_since(call.started)
        content_type = response.headers.get("content-type")
        record.stream = (content_type or "").startswith("text/event-stream")
        headers = client_headers(response.headers.multi_items())
        headers.append(("x-request-id", call.request_id))
        json_out = _is_json(content_type)
        if call.method != "HEAD" and _small(response.headers.get("content-length")):
            content = await self._read(call, record, body, response, json_out)
            headers = [(k, v) for k, v in headers if k != "content-length"]
            return PassReply(response.status_code, headers, content_type, content)
        events = self._answer(call, record, body, response, json_out)
        return PassReply(response.status_code, headers, content_type, events)

    async def _read(
        self,
        call: PassCall,
        record: RequestRecord,
        body: RequestBody,
        response: httpx.Response,
        json_out: bool,
    ) -> bytes:
        """A small answer of known length, read whole (undecoded) and settled at once."""
        status = response.status_code
        try:
            content = b"".join([chunk async for chunk in response.aiter_raw()])
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            error = f"the teacher's answer broke off: {type(exc).__name__}"
            self._settle(record, call, body, None, STATUS_CUT, 502, error)
            raise UpstreamError(error, headers={"x-request-id": call.request_id}) from None
        finally:
            await response.aclose()
        encoding = response.headers.get("content-encoding")
        if not encoding or encoding.strip().lower() == "identity":
            content = self.teacher.redactor.bytes(content, call.authorization)
        probe = BodyProbe(self._keep_bytes(), encoding)
        if json_out:
            probe.feed(content)
        record.bytes_out = len(content)
        outcome = STATUS_OK if status < 400 else STATUS_ERROR
        problem = probe.error_text(status) if status >= 400 else None
        self._settle(record, call, body, probe if json_out else None, outcome, status, problem)
        return content

    def _check(self, call: PassCall) -> None:
        headers = {"x-request-id": call.request_id}
        if call.path.rstrip("/") == REALTIME_PATH:
            raise InvalidRequestError(
                REALTIME_MESSAGE, code="unsupported_endpoint", headers=headers
            )
        if self.settings.refuses(re.sub("/+", "/", call.path)):
            raise PermissionDeniedError(
                f"{call.method} {call.path} is not relayed by this gateway (passthrough.allow / "
                "passthrough.deny).",
                headers=headers,
            )
        if call.content_length is not None and call.content_length > self.settings.max_body_bytes:
            raise _too_large(self.settings.max_body_bytes).with_headers(headers)

    def _record(self, call: PassCall) -> RequestRecord:
        return RequestRecord(
            id=call.request_id,
            created_at=call.created_at,
            endpoint=family(call.path),
            task="",
            task_source="none",
            requested_model=None,
            served_by=SERVED_PASSTHROUGH,
            status=STATUS_INCOMPLETE,
            request_json="",
            api_key_id=call.api_key_id,
            http_method=call.method,
            path_label=path_label(call.path),
        )

    def _keep_bytes(self) -> int:
        s = self.settings
        return s.store_max_bytes if s.store_json_bodies else 0

    async def _answer(
        self,
        call: PassCall,
        record: RequestRecord,
        body: RequestBody,
        response: httpx.Response,
        json_out: bool,
    ) -> AsyncGenerator[bytes, None]:
        """Relay the answer's bytes as they come (undecoded); settle the row at the end."""
        probe = BodyProbe(self._keep_bytes(), response.headers.get("content-encoding"))
        status = response.status_code
        outcome, error, sent = STATUS_INCOMPLETE, None, 0
        try:
            try:
                async for chunk in response.aiter_raw():
                    sent += len(chunk)
                    if json_out:
                        probe.feed(chunk)
                    yield chunk
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                outcome, error = STATUS_CUT, f"the teacher's answer broke off: {type(exc).__name__}"
                log.warning("%s %s: %s", call.method, record.path_label, error)
                raise
            outcome = STATUS_OK if status < 400 else STATUS_ERROR
            if status >= 400:
                error = probe.error_text(status)
        finally:
            await response.aclose()
            record.bytes_out = sent
            self._settle(record, call, body, probe if json_out else None, outcome, status, error)

    def _settle(
        self,
        record: RequestRecord,
        call: PassCall,
        body: RequestBody,
        answer: BodyProbe | None,
        status: str,
        http_status: int,
        error: str | None,
    ) -> None:
        redact = self.teacher.redactor.text
        record.status, record.http_status = status, http_status
        record.error = None if error is None else redact(error, call.authorization)
        record.bytes_in = body.size
        record.latency_ms = _ms_since(call.started)
        asked = body.probe.parsed() if body.probe is not None else None
        if isinstance(asked, dict) and isinstance(asked.get("model"), str):
            record.requested_model = asked["model"]
        if body.probe is not None and body.probe.kept is not None:
            record.request_json = redact(body.probe.kept, call.authorization)
        if answer is not None:
            self._fill_usage(record, answer)
            if record.response_json:
                record.response_json = redact(record.response_json, call.authorization)
        self.ledger.passthrough_row(record)

    def _fill_usage(self, record: RequestRecord, answer: BodyProbe) -> None:
        model, usage = answer.model_and_usage()
        record.teacher_model = model or record.requested_model
        if usage is not None:
            prompt, completion, total = usage_tokens(usage)
            record.prompt_tokens, record.completion_tokens = prompt, completion
            record.total_tokens = total
            price = self.costs.price(record.teacher_model)
            if price is not None:
                record.teacher_cost_usd = price.cost(prompt or 0, completion or 0)
        if answer.kept is not None and record.status == STATUS_OK:
            record.response_json = answer.kept


def _small(content_length: str | None) -> bool:
    return (
        content_length is not None
        and content_length.isdigit()
        and (int(content_length) <= WHOLE_BYTES)
    )


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body is larger than the gateway relays ({limit} bytes; "
        "passthrough.max_body_bytes)."
    )


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
