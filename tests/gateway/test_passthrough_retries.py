"""Which relayed calls the teacher client repeats: safe ones (no body: GET, HEAD, DELETE)
after a retryable status or a connection error, and any call whose connection was refused
before a byte of its body was read; never a call whose body had started."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from understudy.gateway.config import TeacherConfig
from understudy.gateway.errors import UpstreamError
from understudy.gateway.teacher.client import TeacherClient

SETTINGS = TeacherConfig(url="http://teacher.test/v1", api_key="sk-t", backoff_s=0.0)


class Body:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        for chunk in self.chunks:
            yield chunk


class Edge(httpx.AsyncBaseTransport):
    """The network edge: hands each request to ``handler`` without reading its body first
    (httpx's MockTransport reads it, as a connection refused never would)."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return await self.handler(request, len(self.seen))


def client(handler) -> tuple[TeacherClient, list[httpx.Request]]:
    edge = Edge(handler)
    return TeacherClient(SETTINGS, transport=edge), edge.seen


async def test_a_post_refused_before_its_body_was_read_is_sent_again() -> None:
    async def handler(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, content=b"".join([c async for c in request.stream]))

    teacher, seen = client(handler)
    response, attempts = await teacher.relay(
        "POST", "/files", [("content-type", "text/plain")], Body([b"a", b"b"]), authorization=None
    )
    assert (response.status_code, attempts, len(seen)) == (200, 2, 2)
    assert await response.aread() == b"ab"
    assert seen[-1].headers["authorization"] == "Bearer sk-t"


async def test_a_post_whose_body_started_is_never_repeated() -> None:
    async def handler(request: httpx.Request, n: int) -> httpx.Response:
        async for _ in request.stream:
            break
        raise httpx.ConnectError("reset while sending")

    teacher, seen = client(handler)
    with pytest.raises(UpstreamError):
        await teacher.relay("POST", "/files", [], Body([b"a", b"b"]), authorization=None)
    assert len(seen) == 1


async def test_a_post_answered_5xx_is_passed_back_but_a_get_is_retried_first() -> None:
    async def handler(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(503 if n < 3 else 200, json={"n": n})

    teacher, seen = client(handler)
    response, attempts = await teacher.relay("POST", "/embeddings", [], b"{}", authorization=None)
    assert (response.status_code, attempts) == (503, 1)
    teacher, seen = client(handler)
    response, attempts = await teacher.relay("GET", "/files", [], None, authorization=None)
    assert (response.status_code, attempts, len(seen)) == (200, 3, 3)
