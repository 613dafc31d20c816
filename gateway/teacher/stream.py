"""An open teacher stream, read as whole events within its time and size limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping

import httpx

from understudy.gateway.config import TeacherConfig
from understudy.gateway.errors import UpstreamTimeoutError
from understudy.gateway.teacher.body import BodyDecoder
from understudy.gateway.teacher.sse import EventSplitter, event_data


class TeacherStream:
    """An open streaming response from the teacher (status 200, ``text/event-stream``);
    read :meth:`events`, then ``aclose``."""

    def __init__(
        self,
        response: httpx.Response,
        attempts: int,
        headers: Mapping[str, str],
        settings: TeacherConfig,
        redact: Callable[[bytes], bytes],
    ) -> None:
        self.response = response
        self.attempts = attempts
        self.headers = dict(headers)
        self.settings = settings
        self.redact = redact

    async def events(self) -> AsyncIterator[bytes]:
        """Whole events (each ending in a blank line), decoded, known secrets redacted.

        Raises :class:`UpstreamTimeoutError` when no event with data comes within
        ``stream_idle_s`` or the stream outlasts ``stream_max_s``; an answer decoded past
        ``max_answer_bytes``, an event past the splitter's cap and httpx's errors as they come.
        """
        s = self.settings
        decoder = BodyDecoder(self.response.headers.get("content-encoding"), s.max_answer_bytes)
        splitter = EventSplitter()
        raw = self.response.aiter_raw()
        started = last_data = time.monotonic()
        while True:
            now = time.monotonic()
            wait = min(last_data + s.stream_idle_s, started + s.stream_max_s) - now
            try:
                if wait <= 0:
                    raise TimeoutError
                async with asyncio.timeout(wait):
                    chunk = await anext(raw)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UpstreamTimeoutError(self._timeout_message(started)) from None
            for piece in decoder.feed(chunk):
                for event in splitter.feed(piece):
                    if event_data(event) is not None:
                        last_data = time.monotonic()
                    yield self.redact(event)
        if splitter.pending.strip():
            yield self.redact(splitter.pending + b"\n\n")

    def _timeout_message(self, started: float) -> str:
        s = self.settings
        if time.monotonic() - started >= s.stream_max_s:
            limit = f"{s.stream_max_s:g} s (teacher.stream_max_s)"
            return f"the teacher's stream lasted longer than {limit}"
        return (
            f"the teacher's stream sent no data for {s.stream_idle_s:g} s (teacher.stream_idle_s)"
        )

    async def aclose(self) -> None:
        await self.response.aclose()
