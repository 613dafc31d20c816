"""Whether the teacher accepts a caller's own key, before the student answers with it.

In pass-through mode without ``api_keys`` the gateway holds no keys of its own: the teacher
judges each caller's key. A request the teacher answers is judged by the teacher itself; one
the student would answer is not, so before the student answers a key the teacher is asked
(``GET /models`` with that key). Its verdict is kept per key (a hash of it) for
``ACCEPTED_TTL_S`` when accepted, ``REFUSED_TTL_S`` when refused; a teacher that cannot be
reached decides nothing and is asked again next time. A key the teacher has not accepted is
sent to the teacher, which answers with its own error.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import httpx

from understudy.gateway.teacher.client import TeacherClient

ACCEPTED_TTL_S = 300.0
REFUSED_TTL_S = 30.0
MAX_KEYS = 10000


class TeacherKeys:
    def __init__(self, teacher: TeacherClient, clock: Callable[[], float] = time.monotonic):
        self.teacher = teacher
        self.clock = clock
        self._verdicts: dict[str, tuple[bool, float]] = {}

    async def accepted(self, authorization: str | None) -> bool:
        """True when the teacher has accepted this ``Authorization`` header recently."""
        if not authorization:
            return False
        digest = hashlib.sha256(authorization.encode()).hexdigest()
        now = self.clock()
        known = self._verdicts.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        try:
            response = await self.teacher.get("/models", authorization=authorization, timeout_s=5.0)
        except httpx.HTTPError:
            return False
        if response.status_code >= 500:
            return False
        ok = response.status_code < 400
        if len(self._verdicts) >= MAX_KEYS:
            self._verdicts = {k: v for k, v in self._verdicts.items() if v[1] > now}
            if len(self._verdicts) >= MAX_KEYS:
                self._verdicts.clear()
        self._verdicts[digest] = (ok, now + (ACCEPTED_TTL_S if ok else REFUSED_TTL_S))
        return ok
