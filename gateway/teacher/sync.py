"""A blocking teacher call for the distiller's synthetic augmentation.

The distiller asks for a ``Teacher``: chat messages in, the answer's text out. This one posts
to the teacher's ``/chat/completions`` with httpx, retrying 5xx answers, connection errors and
timeouts like the gateway does. A failed call gives an empty answer (augmentation counts it as
rejected) and, after a few failures in a row, the teacher is not asked again by this object,
so a run never spends its budget waiting on a teacher that is down. It holds only settings, so
it can be handed to a child process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx

from understudy.gateway.config import GatewayConfig, TeacherConfig
from understudy.gateway.teacher.client import RETRYABLE_STATUS
from understudy.gateway.teacher.redact import Redactor
from understudy.storage import queries
from understudy.storage.database import Store

log = logging.getLogger("understudy.distiller")

MAX_FAILURES_IN_A_ROW = 3


class SyncTeacher:
    """``teacher(messages) -> str`` against the configured teacher."""

    def __init__(self, settings: TeacherConfig, *, model: str = "", db_path: Path | None = None):
        self.settings = settings
        self.model = model
        self.db_path = db_path
        self.failures = 0
        self._client: httpx.Client | None = None

    @classmethod
    def from_settings(cls, settings: GatewayConfig) -> SyncTeacher:
        return cls(
            settings.teacher, model=settings.distiller.augment.model, db_path=settings.db_path
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def __call__(self, messages: list[dict[str, str]]) -> str:
        if self.failures >= MAX_FAILURES_IN_A_ROW:
            return ""
        try:
            answer = self._ask(messages)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
            self.failures += 1
            log.warning("synthetic data: teacher call failed: %s", exc)
            if self.failures == MAX_FAILURES_IN_A_ROW:
                log.warning("synthetic data: %d teacher failures in a row; stopping", self.failures)
            return ""
        self.failures = 0
        return answer

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _ask(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self._model_name(), "messages": messages}
        response = self._post(body)
        if response.status_code != 200:
            text = Redactor([self.settings.api_key]).text(response.text)[:200]
            if response.status_code in (401, 403):
                text += " (the gateway's teacher key: UNDERSTUDY_TEACHER_API_KEY)"
            raise httpx.HTTPStatusError(
                f"teacher answered {response.status_code}: {text}",
                request=response.request,
                response=response,
            )
        content = response.json()["choices"][0]["message"].get("content")
        return content if isinstance(content, str) else ""

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        s = self.settings
        if self._client is None:
            headers = {"authorization": f"Bearer {s.api_key}"} if s.api_key else {}
            self._client = httpx.Client(
                headers=headers, timeout=httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s)
            )
        url = s.url.rstrip("/") + "/chat/completions"
        deadline = time.monotonic() + s.retry_budget_s
        delay = s.backoff_s
        for attempt in range(s.max_retries + 1):
            last = attempt == s.max_retries or time.monotonic() + delay > deadline
            try:
                response = self._client.post(url, json=body)
            except httpx.TransportError:
                if last:
                    raise
            else:
                if response.status_code not in RETRYABLE_STATUS or last:
                    return response
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _model_name(self) -> str:
        if not self.model:
            self.model = most_requested_model(self.db_path) or ""
        if not self.model:
            raise ValueError("no model to ask: set distiller.augment.model")
        return self.model


def most_requested_model(db_path: Path | str | None) -> str | None:
    """The model name clients asked the teacher for most often, from the request log."""
    if db_path is None or not Store(db_path).exists():
        return None
    with Store(db_path).read() as db:
        return queries.most_requested_model(db)
