"""Student first: generate, judge, then serve the student or defer to the teacher.

The decision is made before the first byte goes out, so a client never receives half a student
answer followed by a teacher answer. Deferred attempts are kept as failure cases; a sample of
served answers is also sent to the teacher off the response path (shadow) to measure live
agreement, and a task whose live agreement drops below target falls back to the teacher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from understudy.gateway.api.responses import new_request_id
from understudy.gateway.errors import UnderstudyError, UpstreamError
from understudy.gateway.serving.pipeline import BodyReply, Call, GatewayService, Reply, StreamReply
from understudy.gateway.serving.pool import Slot, StudentPool
from understudy.gateway.serving.routing import Judgement
from understudy.gateway.serving.student_wire import (
    answer_text,
    completion_body,
    completion_events,
    student_request,
    unsupported_reason,
)
from understudy.storage.records import STATUS_OK, RequestRecord
from understudy.storage.registry import DRIFT_REASON, set_mode
from understudy.student.base import StudentAnswer, StudentError

log = logging.getLogger("understudy.gateway")


class StudentFlow:
    def __init__(self, service: GatewayService, pool: StudentPool) -> None:
        self.service = service
        self.pool = pool
        self.settings = service.settings
        self._background: set[asyncio.Task[Any]] = set()

    async def try_student(self, call: Call) -> Reply | None:
        """Serve from the student when it may and is sure; None means "use the teacher"."""
        slot = self.pool.slot(call.record.task)
        if slot is None or slot.mode == "teacher-only" or self.pool.backend is None:
            return None
        reason = unsupported_reason(call.endpoint.name, call.req, call.body, self.settings.student)
        if reason is not None:
            call.record.route_reason = f"teacher: {reason}"
            return None
        answer = await self._generate(slot, call)
        if answer is None:
            return None
        call.ctx.student_s = answer.latency_ms / 1000
        call.record.student_cost_usd = self.service.costs.student_cost(
            answer.prompt_tokens + answer.completion_tokens, call.ctx.student_s
        )
        judgement = slot.router.judge(answer, call.body)
        call.record.confidence = judgement.confidence
        call.record.student_version = slot.version.id
        call.headers["x-understudy-confidence"] = f"{judgement.confidence:.4f}"
        call.headers["x-understudy-student-version"] = slot.version.id
        self.service.metrics.student_latency.observe(answer.latency_ms / 1000)
        if slot.mode == "shadow":
            call.record.route_reason = "shadow mode: the teacher serves"
            call.on_teacher = self._attempt_hook(call, slot, answer, judgement, "shadow")
            return await self.service.via_teacher(call)
        if judgement.serve:
            if slot.router.should_shadow():
                self._spawn(self._shadow(call, slot, answer))
            return self._serve(call, slot, answer, judgement.reason)
        call.record.route_reason = f"deferred: {judgement.reason}"
        call.on_teacher = self._attempt_hook(call, slot, answer, judgement, "failure")
        return await self._defer(call, slot, answer)

    # -- the two outcomes ---------------------------------------------------------------

    def _serve(
        self, call: Call, slot: Slot, answer: StudentAnswer, reason: str, degraded: bool = False
    ) -> Reply:
        record, headers = call.record, call.headers
        record.served_by = "student"
        record.route_reason = record.route_reason or f"student: {reason}"
        headers["x-understudy-served-by"] = "student"
        if degraded:
            headers["x-understudy-degraded"] = "true"
        record.prompt_tokens = answer.prompt_tokens
        record.completion_tokens = answer.completion_tokens
        record.total_tokens = answer.prompt_tokens + answer.completion_tokens
        body = completion_body(answer, call.req.model, slot.version.id)
        record.response_json = msgspec.json.encode(body).decode()
        if call.req.stream:
            include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
            events = completion_events(answer, call.req.model, slot.version.id, include_usage)
            record.ttfb_ms = call.ctx.elapsed_ms()
            self.service.finish(record, call.ctx, STATUS_OK, 200)
            return StreamReply(dict(headers), _replay(events))
        self.service.finish(record, call.ctx, STATUS_OK, 200)
        return BodyReply(200, dict(headers), msgspec.json.encode(body))

    async def _defer(self, call: Call, slot: Slot, answer: StudentAnswer) -> Reply:
        try:
            return await self.service.teacher_reply(call)
        except UpstreamError as exc:
            if self.settings.student.degraded_mode == "serve" and answer.text:
                call.teacher_done(None, exc)
                call.record.route_reason = f"degraded: {exc.message}"
                log.warning(
                    "teacher failed (%s); serving the student answer (degraded)", exc.message
                )
                return self._serve(call, slot, answer, "degraded", degraded=True)
            self.service.fail(call, exc)
            return _error(exc, call)
        except UnderstudyError as exc:
            self.service.fail(call, exc)
            return _error(exc, call)

    async def _generate(self, slot: Slot, call: Call) -> StudentAnswer | None:
        request = student_request(slot.model, call.req, call.body, self.settings.student)
        try:
            return await asyncio.wait_for(
                self.pool.backend.generate(request), self.settings.student.timeout_s
            )
        except (StudentError, TimeoutError) as exc:
            call.record.route_reason = f"teacher: student failed ({type(exc).__name__}: {exc})"
            log.warning("student %s failed: %s", slot.version.id, exc)
            return None

    # -- failure cases, shadow traffic and drift -----------------------------------------

    def _attempt_hook(
        self, call: Call, slot: Slot, answer: StudentAnswer, judgement: Judgement, kind: str
    ) -> Any:
        def hook(response: dict[str, Any] | None, error: UnderstudyError | None) -> None:
            teacher_text = answer_text(response) if response else None
            agreed = None if teacher_text is None else slot.router.agree(answer.text, teacher_text)
            self._record_attempt(call.ctx.request_id, slot, answer, judgement, kind, agreed)
            if kind == "shadow" and agreed is not None:
                self._observe(slot, agreed)

        return hook

    async def _shadow(self, call: Call, slot: Slot, answer: StudentAnswer) -> None:
        """Ask the teacher too, off the response path, and log the pair."""
        body = {k: v for k, v in call.body.items() if k not in ("stream", "stream_options")}
        shadow_id = new_request_id()
        started = time.perf_counter()
        record = RequestRecord(
            id=shadow_id,
            created_at=time.time(),
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
            result = await self.service.teacher.post(
                call.endpoint.path,
                msgspec.json.encode(body),
                authorization=call.ctx.authorization,
                extra=call.ctx.forward_headers,
            )
        except UnderstudyError as exc:
            record.error = exc.message
            self.service.log_shadow(record)
            return
        record.latency_ms = (time.perf_counter() - started) * 1000
        record.http_status = result.status_code
        parsed = msgspec.json.decode(result.content) if result.status_code == 200 else None
        if isinstance(parsed, dict):
            record.status = STATUS_OK
            record.response_json = result.content.decode("utf-8", "replace")
            record.teacher_model = parsed.get("model")
            usage = parsed.get("usage") or {}
            record.prompt_tokens = usage.get("prompt_tokens")
            record.completion_tokens = usage.get("completion_tokens")
            record.total_tokens = usage.get("total_tokens")
        self.service.log_shadow(record)
        teacher_text = answer_text(parsed) if isinstance(parsed, dict) else None
        if teacher_text is None:
            return
        agreed = slot.router.agree(answer.text, teacher_text)
        judgement = Judgement(True, call.record.confidence or 0.0, "served", {})
        self._record_attempt(call.ctx.request_id, slot, answer, judgement, "shadow", agreed)
        self._observe(slot, agreed)

    def _observe(self, slot: Slot, agreed: bool) -> None:
        self.service.metrics.shadow_agreement.labels(slot.task).inc(int(agreed))
        self.service.metrics.shadow_total.labels(slot.task).inc()
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
        from understudy.storage.database import open_database

        db = open_database(self.settings.db_path, migrate_schema=False)
        try:
            set_mode(db, task, "teacher-only", reason=reason)
        finally:
            db.conn.close()

    def _record_attempt(
        self,
        request_id: str,
        slot: Slot,
        answer: StudentAnswer,
        judgement: Judgement,
        kind: str,
        agreed: bool | None,
    ) -> None:
        self.service.writer.submit(
            "student_attempts",
            {
                "request_id": request_id,
                "created_at": time.time(),
                "task": slot.task,
                "student_version": slot.version.id,
                "kind": kind,
                "text": answer.text,
                "response_json": None,
                "confidence": judgement.confidence,
                "features_json": msgspec.json.encode(judgement.features).decode(),
                "decision": judgement.reason,
                "agreed": None if agreed is None else int(agreed),
                "latency_ms": answer.latency_ms,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
            },
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for shadow calls in flight (at shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)


async def _replay(events: list[bytes]) -> Any:
    for event in events:
        yield event


def _error(exc: UnderstudyError, call: Call) -> BodyReply:
    from understudy.gateway.errors import error_body

    return BodyReply(exc.status_code, dict(call.headers), error_body(exc))
