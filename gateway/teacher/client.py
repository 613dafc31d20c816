"""The teacher client: httpx towards the upstream OpenAI-compatible API, with retries.

5xx answers, connection errors and timeouts are retried with exponential backoff within
``retry_budget_s``; 4xx answers are returned as they are (the caller passes them through).
A stream is retried only until its status line arrives: once bytes flow, never.
:meth:`TeacherClient.relay` sends a pass-through call with its body streamed as it comes;
only a call that is safe to repeat (no body: GET, HEAD, DELETE) is retried, or one whose
connection failed before a byte of its body was read.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from understudy.gateway.config import TeacherConfig
from understudy.gateway.errors import UpstreamError, UpstreamTimeoutError

POOL_SHARDS = 16
RETRYABLE_STATUS = frozenset({500, 502, 503, 504, 520, 521, 522, 524, 529})
# Teacher response headers worth passing back to the client.
PASSED_HEADERS = ("openai-processing-ms", "openai-version", "retry-after", "x-ratelimit-")
SAFE_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


@dataclass
class TeacherResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes
    attempts: int


class TeacherStream:
    """An open streaming response from the teacher (status 200); iterate, then ``aclose``."""

    def __init__(self, response: httpx.Response, attempts: int) -> None:
        self.response = response
        self.attempts = attempts
        self.headers = passed_headers(response.headers)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.response.aiter_raw()

    async def aclose(self) -> None:
        await self.response.aclose()


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
    def __init__(self, settings: TeacherConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.base_url = settings.url.rstrip("/")
        # httpcore scans its whole pool on every request, so one large pool costs time in
        # proportion to the requests in flight; several small pools, used in turn, keep each
        # scan short.
        shards = 1 if transport is not None else POOL_SHARDS
        per_shard = max(1, -(-settings.max_connections // shards))
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._clients = [
            httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport)
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
        if self.settings.pass_through_auth and authorization:
            headers["authorization"] = authorization
        elif self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    async def post(
        self, path: str, body: bytes, *, authorization: str | None, extra: Mapping[str, str]
    ) -> TeacherResponse:
        """POST and read the whole answer; 4xx are returned, 5xx/timeouts retried then raised."""
        headers = self._headers(authorization, extra)
        url = self.base_url + path

        async def once() -> httpx.Response:
            return await self._client.post(url, content=body, headers=headers)

        response, attempts = await self._with_retries(once)
        return TeacherResponse(
            response.status_code, passed_headers(response.headers), response.content, attempts
        )

    async def open_stream(
        self, path: str, body: bytes, *, authorization: str | None, extra: Mapping[str, str]
    ) -> TeacherStream | TeacherResponse:
        """Open a stream. A 200 gives a :class:`TeacherStream`; any other status is read whole
        and returned as a :class:`TeacherResponse` (5xx retried first)."""
        headers = self._headers(authorization, extra)
        client = self._client
        request = client.build_request("POST", self.base_url + path, content=body, headers=headers)

        async def once() -> httpx.Response:
            response = await client.send(request, stream=True)
            if response.status_code != 200:
                await response.aread()
                await response.aclose()
            return response

        response, attempts = await self._with_retries(once)
        if response.status_code == 200:
            return TeacherStream(response, attempts)
        return TeacherResponse(
            response.status_code, passed_headers(response.headers), response.content, attempts
        )

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
        retried like :meth:`post`."""
        headers = self._headers(authorization, extra)
        headers.pop("content-type")
        url = self.base_url + target

        async def once() -> httpx.Response:
            return await self._client.request(method, url, headers=headers)

        response, attempts = await self._with_retries(once)
        return TeacherResponse(
            response.status_code, passed_headers(response.headers), response.content, attempts
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
                    raise _final_error(None, exc, attempt) from None
            else:
                if last or not safe or response.status_code not in RETRYABLE_STATUS:
                    return response, attempt
                await response.aclose()
            await asyncio.sleep(delay)

    async def _with_retries(
        self, once: Callable[[], Awaitable[httpx.Response]]
    ) -> tuple[httpx.Response, int]:
        s = self.settings
        deadline = time.monotonic() + s.retry_budget_s
        attempt = 0
        while True:
            attempt += 1
            error: Exception | None = None
            try:
                response = await once()
                if response.status_code not in RETRYABLE_STATUS:
                    return response, attempt
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                error = exc
                response = None
            delay = s.backoff_s * (2 ** (attempt - 1))
            if attempt > s.max_retries or time.monotonic() + delay > deadline:
                raise _final_error(response, error, attempt)
            await asyncio.sleep(delay)


def _final_error(
    response: httpx.Response | None, error: Exception | None, attempts: int
) -> UpstreamError:
    tries = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(error, httpx.TimeoutException):
        return UpstreamTimeoutError(f"the teacher did not answer in time ({tries})")
    if error is not None:
        return UpstreamError(f"could not reach the teacher: {type(error).__name__} ({tries})")
    assert response is not None
    detail = _error_message(response.content)
    return UpstreamError(
        f"the teacher returned HTTP {response.status_code} {tries}"
        + (f": {detail}" if detail else "")
    )


def _error_message(content: bytes) -> str:
    try:
        body = json.loads(content)
        return str(body["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError):
        return content[:200].decode("utf-8", "replace").strip()
