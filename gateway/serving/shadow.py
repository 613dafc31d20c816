"""Comparing the student with the teacher, and what live agreement sets off.

A served answer is, at the router's ``shadow_rate``, also sent to the teacher off the response
path; the pair is logged and measures live agreement. Every kept attempt (a deferral's failure
case, a shadow-mode pair) is compared with the teacher's answer here too. A task whose live
agreement drops below target falls back to the teacher (drift) until the next promotion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import msgspec

from understudy.gateway.config import GatewayConfig
from understudy.gateway.errors import UnderstudyError
from understudy.gateway.serving.call import Call
from understudy.gateway.serving.ledger import Ledger
from understudy.gateway.serving.passthrough_wire import usage_tokens
from understudy.gateway.serving.pool import Slot
from understudy.gateway.serving.replies import new_request_id
from understudy.gateway.serving.routing import Judgement
from understudy.gateway.serving.student_wire import answer_text
from understudy.gateway.serving.teacher_path import log_failure
from understudy.gateway.serving.verdict import Attempt, AttemptKind
from understudy.gateway.teacher.client import TeacherClient
from understudy.storage.database import Store
from understudy.storage.records import STATUS_OK, RequestRecord
from understudy.storage.registry import DRIFT_REASON, set_mode

log = logging.getLogger("understudy.gateway")


class Shadow:
    def __init__(
        self, settings: GatewayConfig, teacher: TeacherClient, ledger: Ledger, store: Store
    ) -> None:
        self.settings = settings
        self.teacher = teacher
        self.ledger = ledger
        self.store = store
        self._background: set[asyncio.Task[Any]] = set()

    def keep_attempt(
        self,
        request_id: str,
        attempt: Attempt,
        kind: AttemptKind,
        teacher_answer: Mapping[str, Any] | None,
    ) -> None:
        """Log the student's attempt beside the teacher's answer (None: the teacher gave none);
        a shadow pair counts towards live agreement."""
        teacher_text = answer_text(teacher_answer) if teacher_answer else None
        agreed = (
            None
            if teacher_text is None
            else attempt.slot.router.agree(attempt.answer.text, teacher_text)
        )
        self.ledger.attempt(request_id, attempt, kind, agreed)
        checked = kind == "shadow" or (kind == "audit" and attempt.judgement.serve)
        if checked and agreed is not None:
            self._observe(attempt.slot, agreed)

    def maybe_check(self, call: Call, attempt: Attempt) -> None:
        """At the router's shadow rate, ask the teacher too, off the response path."""
        if attempt.slot.router.should_shadow():
            self._spawn(self._check(call, attempt))

    async def _check(self, call: Call, attempt: Attempt) -> None:
        sent = call.body if call.upstream is None else msgspec.json.decode(call.upstream)
        body = {k: v for k, v in sent.items() if k not in ("stream", "stream_options")}
        if call.endpoint.name == "responses":
            body["store"] = False  # a comparison, not a response the client may come back to
        slot = attempt.slot
        started = time.perf_counter()
        record = RequestRecord(
            id=new_request_id(),
            # The request's own arrival, not when this check got under way: the log orders the
            # check with its request, whatever the machine's load.
            created_at=call.ctx.created_at,
            endpoint=call.endpoint.name,
            task=call.record.task,
            task_source=call.record.task_source,
            requested_model=call.req.model,
            served_by="shadow",
            status="error",
            request_json=msgspec.json.encode(body).decode(),
            api_key_id=call.ctx.api_key_id,
            route_reason=f"shadow of {call.ctx.request_id}",
            student_version=slot.version.id,
        )
        try:
            result = await self.teacher.post(
                call.endpoint.path,
                msgspec.json.encode(body),
                authorization=call.ctx.authorization,
                extra=call.ctx.forward_headers,
            )
        except UnderstudyError as exc:
            record.error = exc.message
            record.http_status = exc.status_code
            record.latency_ms = (time.perf_counter() - started) * 1000
            self.ledger.shadow_row(record)
            attempts = getattr(exc, "attempts", 1)
            log_failure(call, exc.status_code, attempts, f"shadow check {record.id}: {exc.message}")
            return
        record.latency_ms = (time.perf_counter() - started) * 1000
        record.http_status = result.status_code
        parsed = result.answer
        if parsed is None:
            record.error = f"teacher HTTP {result.status_code}"
            log_failure(
                call, result.status_code, result.attempts, f"shadow check {record.id}: refused"
            )
        else:
            record.status = STATUS_OK
            record.response_json = result.content.decode("utf-8", "replace")
            record.teacher_model = parsed.get("model")
            prompt, completion, total = usage_tokens(parsed.get("usage") or {})
            record.prompt_tokens, record.completion_tokens = prompt, completion
            record.total_tokens = total
        self.ledger.shadow_row(record)
        if parsed is None or answer_text(parsed) is None:
            return
        served = Judgement(True, call.record.confidence or 0.0, "served", {})
        self.keep_attempt(
            call.ctx.request_id, Attempt(slot, attempt.answer, served), "shadow", parsed
        )

    def _observe(self, slot: Slot, agreed: bool) -> None:
        self.ledger.shadow_checked(slot.task, agreed)
        if slot.router.record_shadow(agreed) and slot.mode == "routed":
            monitor = slot.router.monitor
            reason = (
                f"{DRIFT_REASON}: live agreement {slot.router.live_agreement:.3f} over "
                f"{monitor.samples} shadow checks (upper bound {monitor.upper_bound:.3f} at "
                f"{monitor.confidence:.0%}) below target {slot.router.quality_target:.3f} - "
                f"{self.settings.router.drift_margin:.3f}"
            )
            slot.mode = "teacher-only"
            log.warning(
                "task %s: %s; the teacher serves until the next promotion", slot.task, reason
            )
            self._spawn(asyncio.to_thread(self._persist_mode, slot.task, reason))

    def _persist_mode(self, task: str, reason: str) -> None:
        with self.store.write() as db:
            set_mode(db, task, "teacher-only", reason=reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        """A background job ended: forget it; an error it raised is logged, not left unread."""
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a shadow job failed", exc_info=task.exception())

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for shadow calls in flight (at shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)
