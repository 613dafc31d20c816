"""Slow reads on threads of their own: the dashboard's queries and the rendering of /metrics.

``asyncio.to_thread`` shares the loop's default executor (six threads on a 2-core box) with
readiness, feedback and serving; a few dashboard loads over a large log took all of it, and
``/ready`` and ``/v1/feedback`` timed out. Here at most ``server.read_threads`` such reads run at
once and at most ``server.read_waiting`` wait; a read beyond that is a 503 at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from understudy.gateway.errors import ServiceUnavailableError

P = ParamSpec("P")
T = TypeVar("T")


class SlowReads:
    def __init__(self, threads: int = 2, waiting: int = 16) -> None:
        self.threads = threads
        self.waiting = waiting
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="understudy-read")
        self._in = 0  # reads running or waiting

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on a read thread; 503 when too many reads are queued."""
        if self._in >= self.threads + self.waiting:
            raise ServiceUnavailableError(
                "Too many slow reads (dashboard, metrics) are in progress; try again shortly."
            )
        self._in += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        finally:
            self._in -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
