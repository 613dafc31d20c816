"""One HTTP exchange of the stand-in teacher, over raw ASGI: reading the body, sending, sleeps
that end early when the client leaves or the server stops, and closing the connection."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec

_JSON = (b"content-type", b"application/json")
SSE = (b"content-type", b"text/event-stream; charset=utf-8")


async def read_body(receive: Any) -> bytes:
    """The whole request body."""
    message = await receive()
    raw = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        raw += message.get("body", b"")
    return raw


async def _until_disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Exchange:
    """Send helpers for one request; ``close`` when done."""

    def __init__(self, receive: Any, send: Any, stopping: asyncio.Event) -> None:
        self.receive = receive
        self.send = send
        self._stopping = stopping
        self._waits: tuple[asyncio.Future[Any], ...] = ()

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False if the client left or the server is stopping first."""
        if seconds <= 0:
            return True
        if not self._waits:
            self._waits = (
                asyncio.ensure_future(_until_disconnected(self.receive)),
                asyncio.ensure_future(self._stopping.wait()),
            )
        done, _ = await asyncio.wait(
            self._waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        return not done

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self,
        status: int,
        obj: Any,
        headers: list[tuple[bytes, bytes]] | tuple[()] = (),
        keep: int | None = None,
    ) -> None:
        """Send ``obj`` as JSON with its full Content-Length; with ``keep``, send only that many
        bytes of it and leave the connection open for the caller to break."""
        data = msgspec.json.encode(obj)
        length = (b"content-length", str(len(data)).encode())
        await self.start(status, [_JSON, length, *headers])
        if keep is None:
            await self.body(data)
        else:
            await self.body(data[:keep], more=True)

    async def abort(self) -> None:
        """Close the TCP connection now, before or in the middle of a response.

        ASGI has no such message; uvicorn's ``receive`` is a method of its request cycle, which
        holds the connection's transport. Once the connection is gone uvicorn's ``send`` does
        nothing and no fallback 500 is written."""
        cycle = getattr(self.receive, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise RuntimeError("closing a connection needs uvicorn's HTTP protocols")
        transport.close()
        try:
            await asyncio.wait_for(_until_disconnected(self.receive), 2)
        except TimeoutError:  # the client is not reading what was already sent
            transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_until_disconnected(self.receive), 1)

    def close(self) -> None:
        for wait in self._waits:
            wait.cancel()
