"""The teacher client: httpx towards the upstream OpenAI-compatible API, with retries.

5xx answers, connection errors and timeouts are retried with exponential backoff within
``retry_budget_s``; 4xx answers are returned as they are (the caller passes them through),
except a 401/403 to the gateway's own teacher credentials: that is a
:class:`~understudy.gateway.errors.TeacherCredentialsError` (502) naming the setting, so that a
client does not read it as its own key being wrong.
A stream is retried only until its status line arrives: once bytes flow, never.
:meth:`TeacherClient.relay` sends a pass-through call with its body streamed as it comes;
only a call that is safe to repeat (no body: GET, HEAD, DELETE) is retried, or one whose
connection failed before a byte of its body was read.

The teacher's answer is held to its contract here, once: whole answers and stream openings
within ``deadline_s``, bodies within ``max_answer_bytes`` after decompression
(:mod:`.body`), a 200 checked against its endpoint's shape (:mod:`.contract`), a status that is
neither 200 nor 4xx turned into a 502, and known secrets redacted (:mod:`.redact`).
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from understudy.gateway.config import TeacherConfig
from understudy.gateway.errors import (
    InvalidRequestError,
    TeacherCredentialsError,
    UpstreamError,
    UpstreamTimeoutError,
    error_body,
)
from understudy.gateway.teacher.body import ACCEPTED_ENCODINGS, AnswerTooLarge, read_body
from understudy.gateway.teacher.contract import (
    TeacherContractError,
    check_answer,
    decode_object,
    endpoint_of,
)
from understudy.gateway.teacher.redact import Redactor
from understudy.gateway.teacher.stream import TeacherStream

__all__ = ["TeacherClient", "TeacherResponse", "TeacherStream", "passed_headers"]

POOL_SHARDS = 16
RETRYABLE_STATUS = frozenset({500, 502, 503, 504, 520, 521, 522, 524, 529})
# Teacher response headers worth passing back to the client.
PASSED_HEADERS = ("openai-processing-ms", "openai-version", "retry-after", "x-ratelimit-")
SAFE_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
REFUSED_CREDENTIALS = frozenset({401, 403})


@dataclass
class TeacherResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes
    attempts: int
    answer: dict[str, Any] | None = None  # a 200's answer, checked against its contract


@dataclass
class _Got:
    """One attempt's answer: read whole, or (``stream``) open for its events."""

    status_code: int
    headers: httpx.Headers
    content: bytes = b""
    stream: httpx.Response | None = None


_T = TypeVar("_T")


class RelayBody(Protocol):
    """A request body read as it is sent; ``started`` once its first chunk was taken."""

    started: bool

    def __aiter__(self) -> AsyncIterator[bytes]: ...


MAX_RETRY_AFTER_S = 600
"""Longest wait a relayed ``retry-after`` (``retry-after-ms``) may ask of a client."""


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The teacher's headers a client sees; ``retry-after`` clamped to 0-600 s (a date read
    as the seconds until it), one that is not a number or a date left out."""
    passed: dict[str, str] = {}
    for k, v in headers.items():
        name = k.lower()
        if not name.startswith(PASSED_HEADERS):
            continue
        if name in ("retry-after", "retry-after-ms"):
            clamped = clamp_retry_after(v, 1000 if name.endswith("-ms") else 1)
            if clamped is None:
                continue
            v = clamped
        passed[k] = v
    return passed


def clamp_retry_after(value: str, per_second: int = 1) -> str | None:
    """``value`` (seconds, or milliseconds with ``per_second=1000``, or an HTTP date) within
    0..:data:`MAX_RETRY_AFTER_S`, as text; None when it is neither a number nor a date."""
    try:
        wait = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        wait = (when.timestamp() - time.time()) * per_second
    if wait != wait:  # NaN
        return None
    return str(int(min(max(wait, 0.0), MAX_RETRY_AFTER_S * per_second)))


class TeacherClient:
    def __init__(
        self,
        settings: TeacherConfig,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        secrets: Iterable[str | None] = (),
    ):
        self.settings = settings
        self.base_url = settings.url.rstrip("/")
        self.redactor = Redactor([settings.api_key, *secrets])
        # httpcore scans its whole pool on every request, so one large pool costs time in
        # proportion to the requests in flight; several small pools, used in turn, keep each
        # scan short.
        shards = 1 if transport is not None else POOL_SHARDS
        per_shard = max(1, -(-settings.max_connections // shards))
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        # One TLS context for all of them: each reads the whole CA bundle, which took half a
        # second of every start when each pool made its own.
        tls = httpx.create_ssl_context() if transport is None else True
        self._clients = [
            httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport, verify=tls)
            for _ in range(shards)
        ]
        self._next = itertools.cycle(self._clients)

    @property
    def _client(self) -> httpx.AsyncClient:
        return next(self._next)

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()

    def _headers(self, authorization: str | None, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"content-type": "application/json", **extra}
        headers["accept-encoding"] = ACCEPTED_ENCODINGS
        if self.settings.pass_through_auth and authorization:
            headers["authorization"] = authorization
        elif self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def _gateway_credentials(self, authorization: str | None) -> bool:
        """Whether a refusal of this call is about the gateway's own teacher credentials: its
        ``teacher.api_key`` was sent, or no key at all where the client was not expected to
        bring one (in pass-through mode the client's own key, or its lack, is the client's)."""
        if self.settings.pass_through_auth and authorization:
            return False
        return bool(self.settings.api_key) or not self.settings.pass_through_auth

    def _credentials_error(self, status: int, content: bytes) -> TeacherCredentialsError:
        """The client's answer when the teacher refused the gateway's own credentials."""
        detail = _error_message(content)
        if self.settings.api_key:
            problem = "rejected the gateway's teacher credentials"
            fix = "check UNDERSTUDY_TEACHER_API_KEY (teacher.api_key)"
        else:
            problem = "refused the gateway, which has no teacher key configured"
            fix = "set UNDERSTUDY_TEACHER_API_KEY (teacher.api_key)"
        error = TeacherCredentialsError(
            f"The teacher {problem} (HTTP {status}"
            + (f": {detail}" if detail else "")
            + f"); {fix} where the gateway runs. The API key your client sent is not in "
            "question.",
            headers={"x-should-retry": "false"},  # the same call would be refused again
        )
        error.attempts = 1
        return error

    async def post(
        self, path: str, body: bytes, *, authorization: str | None, extra: Mapping[str, str]
    ) -> TeacherResponse:
        """POST and read the whole answer within ``deadline_s``: a 200 checked against its
        endpoint's contract, a 4xx returned in OpenAI's error shape; 5xx/timeouts retried, then
        raised, as is any other status."""
        client = self._client
        headers = self._headers(authorization, extra)
        url = self.base_url + path

        async def once() -> _Got:
            response = await client.send(
                client.build_request("POST", url, content=body, headers=headers), stream=True
            )
            return await self._read(response)

        got, attempts = await self._within_deadline(self._with_retries(once, authorization))
        return self._answer(endpoint_of(path), got, attempts, authorization)

    async def open_stream(
        self, path: str, body: bytes, *, authorization: str | None, extra: Mapping[str, str]
    ) -> TeacherStream | TeacherResponse:
        """Open a stream within ``deadline_s``. A 200 of events gives a :class:`TeacherStream`;
        a 4xx is read whole and returned as a :class:`TeacherResponse` (5xx retried first);
        anything else is raised."""
        headers = self._headers(authorization, extra)
        client = self._client
        request = client.build_request("POST", self.base_url + path, content=body, headers=headers)

        async def once() -> _Got:
            response = await client.send(request, stream=True)
            content_type = response.headers.get("content-type", "")
            if response.status_code == 200 and content_type.startswith("text/event-stream"):
                return _Got(200, response.headers, stream=response)
            return await self._read(response)

        got, attempts = await self._within_deadline(self._with_retries(once, authorization))
        if got.stream is not None:
            redact = self._redacting(authorization)
            passed = passed_headers(got.headers)
            return TeacherStream(got.stream, attempts, passed, self.settings, redact)
        if got.status_code == 200:
            kind = got.headers.get("content-type") or "no content type"
            raise TeacherContractError(
                f"the teacher answered a stream request with {kind}, not server-sent events"
            )
        return self._answer(None, got, attempts, authorization)

    async def get(
        self, path: str, *, authorization: str | None = None, timeout_s: float | None = None
    ) -> httpx.Response:
        headers = self._headers(authorization, {})
        headers.pop("content-type")
        return await self._client.get(
            self.base_url + path, headers=headers, timeout=timeout_s or httpx.USE_CLIENT_DEFAULT
        )

    async def send(
        self, method: str, target: str, *, authorization: str | None, extra: Mapping[str, str]
    ) -> TeacherResponse:
        """A call without a body (GET, DELETE) to ``target`` (path and query), read whole;
        held and retried like :meth:`post` (a 200 must be a JSON object)."""
        client = self._client
        headers = self._headers(authorization, extra)
        headers.pop("content-type")
        url = self.base_url + target

        async def once() -> _Got:
            request = client.build_request(method, url, headers=headers)
            return await self._read(await client.send(request, stream=True))

        got, attempts = await self._within_deadline(self._with_retries(once, authorization))
        return self._answer(None, got, attempts, authorization)

    async def _read(self, response: httpx.Response) -> _Got:
        """The whole answer, decoded within ``max_answer_bytes``; the response closed. One
        that says it is larger is refused before a byte of its body is read."""
        try:
            limit = self.settings.max_answer_bytes
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise AnswerTooLarge(
                    f"the teacher's answer is larger than {limit} bytes (teacher.max_answer_bytes)"
                )
            encoding = response.headers.get("content-encoding")
            content = await read_body(
                response.aiter_raw(), encoding, self.settings.max_answer_bytes
            )
        finally:
            await response.aclose()
        return _Got(response.status_code, response.headers, content)

    async def _within_deadline(self, work: Awaitable[_T]) -> _T:
        deadline = self.settings.deadline_s
        try:
            async with asyncio.timeout(deadline):
                return await work
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"the teacher did not finish its answer within {deadline:g} s (teacher.deadline_s)"
            ) from None

    def _redacting(self, authorization: str | None) -> Callable[[bytes], bytes]:
        return lambda data: self.redactor.bytes(data, authorization)

    def _answer(
        self, endpoint: str | None, got: _Got, attempts: int, authorization: str | None
    ) -> TeacherResponse:
        """A final answer held to the contract: 200 checked, 4xx in OpenAI's shape, any other
        status a 502."""
        status = got.status_code
        content = self.redactor.bytes(got.content, authorization)
        headers = passed_headers(got.headers)
        if status == 200:
            answer = check_answer(endpoint, content)
            return TeacherResponse(200, headers, content, attempts, answer)
        if status in REFUSED_CREDENTIALS and self._gateway_credentials(authorization):
            raise self._credentials_error(status, content)
        if 400 <= status < 500:
            return TeacherResponse(status, headers, _refusal(status, content), attempts)
        detail = _error_message(content)
        raise UpstreamError(
            f"the teacher answered HTTP {status}, which is not an answer to pass on"
            + (f": {detail}" if detail else "")
        )

    async def relay(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: RelayBody | bytes | None,
        *,
        authorization: str | None,
    ) -> tuple[httpx.Response, int]:
        """Send a pass-through call to ``target`` (path and query under the base URL) and
        return the open response, whatever its status, with the attempts made; the caller
        reads it as a stream and closes it. A retryable status of a safe call is retried
        within the budget, then returned as it is."""
        sent = [(k, v) for k, v in headers if k != "authorization"]
        if self.settings.pass_through_auth and authorization:
            sent.append(("authorization", authorization))
        elif self.settings.api_key:
            sent.append(("authorization", f"Bearer {self.settings.api_key}"))
        client, url = self._client, self.base_url + target
        safe = method in SAFE_METHODS and body is None
        s = self.settings
        deadline = time.monotonic() + s.retry_budget_s
        attempt = 0
        while True:
            attempt += 1
            delay = s.backoff_s * (2 ** (attempt - 1))
            last = attempt > s.max_retries or time.monotonic() + delay > deadline
            request = client.build_request(method, url, headers=sent, content=body)
            try:
                response = await client.send(request, stream=True)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) and (
                    body is None or isinstance(body, bytes) or not body.started
                )
                if last or not (safe or unsent):
                    raise _final_error(None, b"", exc, attempt) from None
            else:
                status = response.status_code
                if status in REFUSED_CREDENTIALS and self._gateway_credentials(authorization):
                    got = await self._read(response)
                    content = self.redactor.bytes(got.content, authorization)
                    raise self._credentials_error(status, content)
                if last or not safe or status not in RETRYABLE_STATUS:
                    return response, attempt
                await response.aclose()
            await asyncio.sleep(delay)

    async def _with_retries(
        self, once: Callable[[], Awaitable[_Got]], authorization: str | None
    ) -> tuple[_Got, int]:
        s = self.settings
        deadline = time.monotonic() + s.retry_budget_s
        attempt = 0
        while True:
            attempt += 1
            error: Exception | None = None
            got: _Got | None = None
            try:
                got = await once()
                if got.status_code not in RETRYABLE_STATUS:
                    return got, attempt
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                error = exc
            delay = s.backoff_s * (2 ** (attempt - 1))
            if attempt > s.max_retries or time.monotonic() + delay > deadline:
                if got is None:
                    raise _final_error(None, b"", error, attempt)
                content = self.redactor.bytes(got.content, authorization)
                raise _final_error(got.status_code, content, error, attempt)
            await asyncio.sleep(delay)


def _final_error(
    status: int | None, content: bytes, error: Exception | None, attempts: int
) -> UpstreamError:
    tries = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(error, httpx.TimeoutException):
        final: UpstreamError = UpstreamTimeoutError(f"the teacher did not answer in time ({tries})")
    elif error is not None:
        final = UpstreamError(f"could not reach the teacher: {type(error).__name__} ({tries})")
    else:
        detail = _error_message(content)
        final = UpstreamError(
            f"the teacher returned HTTP {status} {tries}" + (f": {detail}" if detail else "")
        )
    final.attempts = attempts
    return final


def _error_message(content: bytes) -> str:
    try:
        body = json.loads(content)
        return str(body["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError, RecursionError):
        return content[:200].decode("utf-8", "replace").strip()


def _refusal(status: int, content: bytes) -> bytes:
    """A teacher 4xx as the client gets it: its own OpenAI error as it is, anything else (an
    HTML page, text) wrapped in OpenAI's error shape with the same status."""
    try:
        body = decode_object(content)
    except UpstreamError:
        body = None
    if body is not None and isinstance(body.get("error"), dict):
        return content
    error = InvalidRequestError(
        f"The teacher answered HTTP {status}: {_error_message(content) or 'no detail'}"
    )
    return error_body(error)
