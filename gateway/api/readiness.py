"""``/ready``'s answer, computed at most once per interval.

Readiness asks the teacher for ``/models`` (with the operator's key) and writes to the
database. ``/ready`` needs no key (load balancers call it), so each answer is kept for
``CACHE_S`` seconds (one) and calls arriving while one check runs wait for it: anonymous callers
cannot turn it into teacher calls and write transactions (it was one of each per call).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from understudy.gateway.teacher.client import TeacherClient
from understudy.storage.request_log import RequestLogWriter

CACHE_S = 1.0


class Readiness:
    def __init__(
        self,
        teacher: TeacherClient,
        writer: RequestLogWriter,
        cache_s: float = CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.teacher = teacher
        self.writer = writer
        self.cache_s = cache_s
        self.clock = clock
        self._lock = asyncio.Lock()
        self._answer: tuple[int, dict[str, Any]] | None = None
        self._at = 0.0

    async def answer(self) -> tuple[int, dict[str, Any]]:
        """``(status, body)``: the last check's, while it is fresher than ``cache_s``."""
        async with self._lock:
            if self._answer is None or self.clock() - self._at >= self.cache_s:
                self._answer = await self._check()
                self._at = self.clock()
            return self._answer

    async def _check(self) -> tuple[int, dict[str, Any]]:
        writer = self.writer
        teacher_ok, teacher_detail = await _teacher_reachable(self.teacher)
        db_problem = await asyncio.to_thread(writer.check_writable)
        if db_problem is None and not writer.alive:
            db_problem = "the request log writer is not running"
        stats = writer.stats()
        ready = teacher_ok and db_problem is None
        body = {
            "status": "ready" if ready else "not_ready",
            "teacher": {"ok": teacher_ok, "detail": teacher_detail},
            "database": {
                "ok": db_problem is None,
                "detail": db_problem or "writable",
                "log_healthy": stats.healthy,
                "log_last_error": stats.last_error,
                "queue_depth": stats.depth,
                "unwritten_age_s": round(stats.unwritten_age_s, 3),
                "max_commit_lag_s": round(stats.max_commit_lag_s, 3),
                "dropped_rows": stats.dropped,
                "poison_rows": stats.poison_rows,
                "writer_restarts": stats.restarts,
                "reopened": stats.reopened,
                "notice": stats.notice,
            },
        }
        return (200 if ready else 503), body


async def _teacher_reachable(teacher: TeacherClient) -> tuple[bool, str]:
    try:
        response = await teacher.get("/models", timeout_s=3.0)
    except httpx.HTTPError as exc:
        return False, f"unreachable: {type(exc).__name__}"
    if response.status_code >= 500:
        return False, f"HTTP {response.status_code}"
    return True, f"HTTP {response.status_code}"
